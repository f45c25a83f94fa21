//! The daily close's tables as Arrow record batches: their schemas (documented, column by
//! column, in `docs/tables.md`, which the tests compare with what pyarrow reads) and the batches
//! of a [`DayClose`]'s rows.
//!
//! Pure: rows in, batches out. `io::snapshots` writes them as Parquet; the HTTP server streams
//! the user table as Arrow IPC.
//!
//! May import: what `analytics/mod.rs` allows its layer; this module uses `crate::analytics::segments`, `crate::core::calendar`, `crate::core::catalog`, `crate::core::daily`, `crate::core::features`, `crate::core::sessions`, `streamflix-schemas`.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int32Array, Int64Array, ListBuilder,
    RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use streamflix_schemas::{ChurnStatus, Rating};

use crate::analytics::segments;
use crate::core::calendar::month_label;
use crate::core::catalog::{bits, Catalog};
use crate::core::daily::{AlertRow, DayClose, GenreDay, RetentionRow};
use crate::core::features::FeatureRow;
use crate::core::sessions::ClosedSession;

/// The marker a complete partition gets, written after its parts.
pub const SUCCESS: &str = "_SUCCESS";

/// One of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// The day's ratings.
    Ratings,
    /// Users whose state changed on the day.
    UserFeatures,
    /// Every user, at month ends and at the end of the input.
    UserFeaturesFull,
    /// Sessions closed on the day.
    Sessions,
    /// Alerts fired on the day.
    ChurnAlerts,
    /// Per genre and day.
    GenreDaily,
    /// The cohort triangle, at month ends and at the end of the input.
    CohortRetention,
    /// The catalog, once.
    Movies,
}

impl Table {
    /// Every table, in the order they are written.
    pub const ALL: [Table; 8] = [
        Table::Ratings,
        Table::UserFeatures,
        Table::UserFeaturesFull,
        Table::Sessions,
        Table::ChurnAlerts,
        Table::GenreDaily,
        Table::CohortRetention,
        Table::Movies,
    ];

    /// The table's name (its directory).
    pub fn name(self) -> &'static str {
        match self {
            Table::Ratings => "ratings",
            Table::UserFeatures => "user_features",
            Table::UserFeaturesFull => "user_features_full",
            Table::Sessions => "sessions",
            Table::ChurnAlerts => "churn_alerts",
            Table::GenreDaily => "genre_daily",
            Table::CohortRetention => "cohort_retention",
            Table::Movies => "movies",
        }
    }

    /// The table called `name`.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Written at every day close (the others: at month ends and at the end of the input, or once).
    pub fn is_daily(self) -> bool {
        !matches!(self, Table::UserFeaturesFull | Table::CohortRetention | Table::Movies)
    }

    /// The table's schema.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
        SCHEMAS.get_or_init(|| Table::ALL.iter().map(|t| Arc::new(t.build_schema())).collect())[self as usize]
            .clone()
    }

    fn build_schema(self) -> Schema {
        let f = |name: &str, t: DataType, nullable: bool| Field::new(name, t, nullable);
        let strings = || DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
        let fields = match self {
            Table::Ratings => vec![
                f("user_id", DataType::Int32, false),
                f("movie_id", DataType::Int32, false),
                f("rating", DataType::Float32, false),
                f("ts", DataType::Int64, false),
                f("ts_utc", utc(), false),
            ],
            Table::UserFeatures | Table::UserFeaturesFull => vec![
                f("user_id", DataType::Int32, false),
                f("as_of", DataType::Int64, false),
                f("status", DataType::Utf8, false),
                f("ratings", DataType::Int64, false),
                f("tags", DataType::Int64, false),
                f("events_lifetime", DataType::Int64, false),
                f("events_7d", DataType::Int64, false),
                f("events_30d", DataType::Int64, false),
                f("events_90d", DataType::Int64, false),
                f("rating_mean", DataType::Float64, true),
                f("rating_std", DataType::Float64, true),
                f("first_seen", DataType::Int64, false),
                f("last_activity", DataType::Int64, false),
                f("last_activity_utc", utc(), false),
                f("recency_days", DataType::Float64, false),
                f("active_days", DataType::Int64, false),
                f("active_days_90d", DataType::Int64, false),
                f("sessions", DataType::Int64, false),
                f("binge_sessions", DataType::Int64, false),
                f("mean_session_minutes", DataType::Float64, true),
                f("favourite_genre", DataType::Utf8, true),
                f("genre_diversity", DataType::Float64, false),
                f("cohort", DataType::Utf8, false),
                f("r_score", DataType::Int32, true),
                f("f_score", DataType::Int32, true),
                f("m_score", DataType::Int32, true),
                f("segment", DataType::Utf8, true),
            ],
            Table::Sessions => vec![
                f("session_id", DataType::Utf8, false),
                f("user_id", DataType::Int32, false),
                f("start", DataType::Int64, false),
                f("end", DataType::Int64, false),
                f("start_utc", utc(), false),
                f("events", DataType::Int32, false),
                f("ratings", DataType::Int32, false),
                f("tags", DataType::Int32, false),
                f("genres", strings(), false),
                f("mean_rating", DataType::Float64, true),
                f("binge", DataType::Boolean, false),
                f("first", DataType::Boolean, false),
            ],
            Table::ChurnAlerts => vec![
                f("alert_id", DataType::Utf8, false),
                f("user_id", DataType::Int32, false),
                f("status", DataType::Utf8, false),
                f("at", DataType::Int64, false),
                f("at_utc", utc(), false),
                f("last_activity", DataType::Int64, false),
                f("inactive_days", DataType::Float64, false),
            ],
            Table::GenreDaily => vec![
                f("genre", DataType::Utf8, false),
                f("day", DataType::Date32, false),
                f("ratings", DataType::Int64, false),
                f("rating_sum", DataType::Float64, false),
                f("rating_mean", DataType::Float64, true),
                f("raters", DataType::Int64, false),
                f("sessions", DataType::Int64, false),
                f("first_rating_users", DataType::Int64, false),
            ],
            Table::CohortRetention => vec![
                f("as_of", DataType::Int64, false),
                f("cohort", DataType::Utf8, false),
                f("months_since_signup", DataType::Int32, false),
                f("cohort_size", DataType::Int64, false),
                f("active_users", DataType::Int64, false),
                f("share", DataType::Float64, false),
            ],
            Table::Movies => vec![
                f("movie_id", DataType::Int32, false),
                f("title", DataType::Utf8, false),
                f("year", DataType::Int32, true),
                f("genres", strings(), false),
            ],
        };
        Schema::new(fields)
    }
}

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Ids are Int32 in the tables (MovieLens's fit; Spark has no unsigned types): larger ones would
/// wrap, so they are clamped visibly instead (ids are validated on input to be far below).
fn id(x: u32) -> i32 {
    i32::try_from(x).unwrap_or(i32::MAX)
}

fn count(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn timestamps(secs: impl Iterator<Item = i64>) -> ArrayRef {
    let micros: Vec<i64> = secs.map(|s| s.saturating_mul(1_000_000)).collect();
    Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC"))
}

fn batch(table: Table, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(table.schema(), columns).expect("columns match the table's schema")
}

/// The genre names of `mask`, as a list column.
fn genre_lists(masks: impl Iterator<Item = u64>, genre_names: &[String]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for mask in masks {
        for i in bits(mask) {
            b.values().append_value(genre_names.get(i).map_or("", String::as_str));
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// The `ratings` batch.
pub fn ratings(rows: &[Rating]) -> RecordBatch {
    batch(
        Table::Ratings,
        vec![
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| id(r.user)))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| id(r.movie)))),
            Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.rating))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ts))),
            timestamps(rows.iter().map(|r| r.ts)),
        ],
    )
}

/// A `user_features` (or `user_features_full`) batch.
pub fn user_features(table: Table, rows: &[FeatureRow], genre_names: &[String]) -> RecordBatch {
    let ints = |f: fn(&FeatureRow) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| count(f(r)))))
    };
    let floats = |f: fn(&FeatureRow) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Float64Array>())
    };
    let score = |k: usize| -> ArrayRef {
        Arc::new(rows.iter().map(|r| r.segment.map(|s| i32::from(s[k]))).collect::<Int32Array>())
    };
    let mut favourite = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
    let mut cohort = StringBuilder::with_capacity(rows.len(), rows.len() * 7);
    // Cohort labels repeat: format each month once.
    let mut labels: Vec<(i32, String)> = Vec::new();
    for r in rows {
        match r.favourite_genre {
            Some(i) => favourite.append_value(genre_names.get(i).map_or("", String::as_str)),
            None => favourite.append_null(),
        }
        let i = match labels.binary_search_by_key(&r.cohort, |(m, _)| *m) {
            Ok(i) => i,
            Err(i) => {
                labels.insert(i, (r.cohort, month_label(r.cohort)));
                i
            }
        };
        cohort.append_value(&labels[i].1);
    }
    let (favourite, cohort) = (favourite.finish(), cohort.finish());
    batch(
        table,
        vec![
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| id(r.user)))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.as_of))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| {
                if r.churned {
                    "churned"
                } else {
                    "active"
                }
            }))),
            ints(|r| r.ratings),
            ints(|r| r.tags),
            ints(|r| r.ratings + r.tags),
            ints(|r| r.events_7d),
            ints(|r| r.events_30d),
            ints(|r| r.events_90d),
            floats(|r| r.rating_mean),
            floats(|r| r.rating_std),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.first_seen))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.last_activity))),
            timestamps(rows.iter().map(|r| r.last_activity)),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.recency_days))),
            ints(|r| r.active_days),
            ints(|r| r.active_days_90d),
            ints(|r| r.sessions),
            ints(|r| r.binge_sessions),
            floats(|r| r.mean_session_minutes),
            Arc::new(favourite),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.genre_diversity))),
            Arc::new(cohort),
            score(0),
            score(1),
            score(2),
            Arc::new(rows.iter().map(|r| r.segment.map(|s| segments::name(s[3]))).collect::<StringArray>()),
        ],
    )
}

/// The `sessions` batch.
pub fn sessions(rows: &[(u32, ClosedSession)], genre_names: &[String]) -> RecordBatch {
    let u32s = |f: fn(&ClosedSession) -> u32| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|(_, s)| id(f(s)))))
    };
    let bools = |f: fn(&ClosedSession) -> bool| -> ArrayRef {
        Arc::new(rows.iter().map(|(_, s)| Some(f(s))).collect::<BooleanArray>())
    };
    batch(
        Table::Sessions,
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(u, s)| format!("{u}-{}", s.start)))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|(u, _)| id(*u)))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, s)| s.start))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, s)| s.end()))),
            timestamps(rows.iter().map(|(_, s)| s.start)),
            u32s(|s| s.events),
            u32s(|s| s.ratings),
            u32s(|s| s.events - s.ratings),
            genre_lists(rows.iter().map(|(_, s)| s.genres), genre_names),
            Arc::new(rows.iter().map(|(_, s)| s.mean_rating).collect::<Float64Array>()),
            bools(|s| s.binge),
            bools(|s| s.first),
        ],
    )
}

/// The `churn_alerts` batch.
pub fn churn_alerts(rows: &[AlertRow]) -> RecordBatch {
    let status = |s: ChurnStatus| match s {
        ChurnStatus::Churned => "churned",
        ChurnStatus::Reactivated => "reactivated",
    };
    batch(
        Table::ChurnAlerts,
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|a| format!("{}-{}-{}", a.user, a.last_activity, status(a.status))),
            )),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|a| id(a.user)))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|a| status(a.status)))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|a| a.at))),
            timestamps(rows.iter().map(|a| a.at)),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|a| a.last_activity))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|a| a.inactive_days))),
        ],
    )
}

/// The `genre_daily` batch of `day` (days since the epoch).
pub fn genre_daily(day: i64, rows: &[GenreDay], genre_names: &[String]) -> RecordBatch {
    let ints = |f: fn(&GenreDay) -> u64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|g| count(f(g)))))
    };
    let day = i32::try_from(day).unwrap_or(i32::MAX);
    batch(
        Table::GenreDaily,
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|g| genre_names.get(g.genre).map_or("", String::as_str)),
            )),
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|_| day))),
            ints(|g| g.ratings),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|g| g.rating_sum))),
            Arc::new(
                rows.iter()
                    .map(|g| (g.ratings > 0).then(|| g.rating_sum / g.ratings as f64))
                    .collect::<Float64Array>(),
            ),
            ints(|g| g.raters),
            ints(|g| g.sessions),
            ints(|g| g.first_rating_users),
        ],
    )
}

/// The `cohort_retention` batch at `as_of`.
pub fn cohort_retention(as_of: i64, rows: &[RetentionRow]) -> RecordBatch {
    batch(
        Table::CohortRetention,
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| as_of))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| month_label(r.cohort)))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.months))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| count(r.size)))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| count(r.active)))),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.active as f64 / r.size.max(1) as f64),
            )),
        ],
    )
}

/// The `movies` batch.
pub fn movies(catalog: &Catalog) -> RecordBatch {
    let rows = catalog.movie_rows();
    batch(
        Table::Movies,
        vec![
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| id(r.0)))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(rows.iter().map(|r| r.2.map(i32::from)).collect::<Int32Array>()),
            genre_lists(rows.iter().map(|r| r.3), catalog.genre_names()),
        ],
    )
}

/// Rows of the user table as an Arrow IPC stream (the `user_features` schema), in batches of
/// 65,536 rows.
///
/// # Errors
/// Arrow failed to encode (a bug).
pub fn user_features_ipc(
    rows: &[FeatureRow],
    genre_names: &[String],
) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let schema = Table::UserFeatures.schema();
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
    for chunk in rows.chunks(65_536) {
        w.write(&user_features(Table::UserFeatures, chunk, genre_names))?;
    }
    w.finish()?;
    drop(w);
    Ok(out)
}

/// The batches of a closed day for the tables in `tables`, skipping tables without rows.
pub fn day_batches(close: &DayClose, tables: &[Table], genre_names: &[String]) -> Vec<(Table, RecordBatch)> {
    let mut out = Vec::new();
    for &t in tables {
        let b = match t {
            Table::Ratings if !close.ratings.is_empty() => ratings(&close.ratings),
            Table::UserFeatures if !close.users.is_empty() => user_features(t, &close.users, genre_names),
            Table::Sessions if !close.sessions.is_empty() => sessions(&close.sessions, genre_names),
            Table::ChurnAlerts if !close.alerts.is_empty() => churn_alerts(&close.alerts),
            Table::GenreDaily if !close.genres.is_empty() => {
                genre_daily(close.day, &close.genres, genre_names)
            }
            Table::UserFeaturesFull => match &close.full {
                Some(full) if !full.users.is_empty() => user_features(t, &full.users, genre_names),
                _ => continue,
            },
            Table::CohortRetention => match &close.full {
                Some(full) if !full.retention.is_empty() => cohort_retention(close.as_of, &full.retention),
                _ => continue,
            },
            _ => continue,
        };
        out.push((t, b));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_a_schema_and_a_unique_name() {
        let mut names: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Table::ALL.len());
        for t in Table::ALL {
            assert_eq!(Table::from_name(t.name()), Some(t));
            assert!(!t.schema().fields().is_empty());
        }
    }

    #[test]
    fn ratings_batch_has_micros_utc_timestamps() {
        let b = ratings(&[Rating { user: 1, movie: 2, rating: 4.5, ts: 1_500_000_000 }]);
        let ts = b.column(4).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(ts.value(0), 1_500_000_000_000_000);
        assert_eq!(b.num_rows(), 1);
    }
}
