//! Every librdkafka call rdkafka does not wrap, and so all of the Kafka transport's `unsafe`.
//!
//! Per-partition queues read a batch at a time, the doorbell their callbacks ring, the cached
//! fetch watermarks, and librdkafka's own producer flush. Each `unsafe` block says why it is
//! sound.
//!
//! May import: nothing of the crate (callers hand records on through a closure).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::source::InputContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{Producer, ProducerContext, ThreadedProducer};

/// Records read from one partition before choosing again.
const BURST: usize = 64;

/// Waits up to `timeout_ms` until every record the producer queued is delivered or failed, with
/// librdkafka's own flush, which serves delivery reports in 10 ms slices until none is
/// outstanding. rdkafka's `flush` instead polls for a report in up to 100 ms slices, and with a
/// ThreadedProducer its thread takes the reports first, so each flush lasted at least 100 ms
/// (through tansu, 0.7 s of a 2.2 s run was the checkpoints' flushes).
pub(super) fn flush_producer<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    timeout_ms: i32,
) -> Result<(), KafkaError> {
    use rdkafka::bindings::{rd_kafka_flush, rd_kafka_resp_err_t};
    // SAFETY: the producer's client pointer is valid while `producer` lives.
    let err = unsafe { rd_kafka_flush(producer.client().native_ptr(), timeout_ms) };
    if err != rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(KafkaError::Flush(err.into()));
    }
    Ok(())
}

/// One input partition's own librdkafka queue, read a batch at a time
/// (`rd_kafka_consume_batch_queue`, which rdkafka does not wrap: its per-message poll, with an
/// event conversion and clock reads per record, and each message's release were about a quarter
/// of the processing thread through tansu).
pub(super) struct Lane {
    /// Index of the partition in the processor's partition list.
    pub(super) index: usize,
    /// The topic, for librdkafka calls by name.
    topic: std::ffi::CString,
    partition: i32,
    queue: *mut rdkafka::bindings::rd_kafka_queue_t,
    /// Keeps the callback's target alive as long as the queue may call it.
    doorbell: Arc<Doorbell>,
    /// The consumer the queue belongs to: dropped after the queue.
    consumer: Arc<BaseConsumer<InputContext>>,
}

impl Lane {
    /// Takes partition `partition` of `topic` off the consumer's queue onto its own (what
    /// rdkafka's `split_partition_queue` does), ringing `doorbell` when records arrive in it empty.
    pub(super) fn split(
        consumer: &Arc<BaseConsumer<InputContext>>,
        index: usize,
        topic: &str,
        partition: u32,
        doorbell: &Arc<Doorbell>,
    ) -> Result<Lane, &'static str> {
        let topic = std::ffi::CString::new(topic).map_err(|_| "a topic name with a NUL byte")?;
        let partition = partition as i32;
        // SAFETY: the client pointer is valid while `consumer` lives (the lane holds it); the
        // topic string outlives the call.
        let queue = unsafe {
            rdkafka::bindings::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            )
        };
        if queue.is_null() {
            return Err("librdkafka has no queue for it");
        }
        let lane =
            Lane { index, topic, partition, queue, doorbell: doorbell.clone(), consumer: consumer.clone() };
        // SAFETY: `queue` is a live queue handle. The callback's argument points into the
        // lane's `doorbell` Arc, which outlives the registration: `drop` unregisters it first.
        unsafe {
            rdkafka::bindings::rd_kafka_queue_forward(queue, std::ptr::null_mut());
            rdkafka::bindings::rd_kafka_queue_cb_event_enable(
                queue,
                Some(ring_doorbell),
                Arc::as_ptr(&lane.doorbell) as *mut std::ffi::c_void,
            );
        }
        Ok(lane)
    }

    /// Hands the records waiting in the queue, up to [`BURST`], to `feed` (partition index,
    /// offset, key, payload) until it fails; returns how many it took.
    #[inline]
    pub(super) fn read<E>(
        &mut self,
        mut feed: impl FnMut(usize, i64, Option<&[u8]>, Option<&[u8]>) -> Result<(), E>,
    ) -> Result<usize, E> {
        use rdkafka::bindings::{rd_kafka_message_t, rd_kafka_resp_err_t};
        let mut batch: [*mut rd_kafka_message_t; BURST] = [std::ptr::null_mut(); BURST];
        // SAFETY: `queue` is live; librdkafka writes at most BURST message pointers.
        let n = unsafe {
            rdkafka::bindings::rd_kafka_consume_batch_queue(self.queue, 0, batch.as_mut_ptr(), BURST)
        };
        let Ok(n) = usize::try_from(n) else {
            tracing::warn!("kafka: reading a partition queue failed");
            return Ok(0);
        };
        let mut result = Ok(());
        for &m in &batch[..n] {
            if result.is_ok() {
                // SAFETY: librdkafka returned `m` as a live message; its payload and key are
                // valid until `rd_kafka_message_destroy` below.
                let msg: &rd_kafka_message_t = unsafe { &*m };
                if msg.err == rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    let bytes = |ptr: *mut std::ffi::c_void, len: usize| {
                        // SAFETY: see above; a null pointer is an absent payload or key.
                        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
                    };
                    result = feed(
                        self.index,
                        msg.offset,
                        bytes(msg.key, msg.key_len),
                        bytes(msg.payload, msg.len),
                    );
                } else {
                    let e = KafkaError::MessageConsumption(msg.err.into());
                    tracing::warn!("kafka: {e}");
                }
            }
            // SAFETY: each message returned by the batch call is released exactly once.
            unsafe { rdkafka::bindings::rd_kafka_message_destroy(m) };
        }
        result.map(|()| n)
    }

    /// Records between the position and the high watermark of the latest fetch response (≤ 0:
    /// read to the end as far as that response knew), if there was one.
    pub(super) fn unread(&self, position: u64) -> Option<i64> {
        self.fetched_high().map(|high| high - position as i64)
    }

    /// The partition's high watermark as its latest fetch response gave it, if there was one
    /// (librdkafka's cached value, no request; rdkafka has no safe wrapper for it).
    fn fetched_high(&self) -> Option<i64> {
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer is valid while the lane holds the consumer; the topic string
        // and the out-pointers outlive the call.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                self.topic.as_ptr(),
                self.partition,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            .then_some(high)
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // SAFETY: unregisters the callback before the doorbell can go, then releases the
        // handle `rd_kafka_queue_get_partition` gave (the consumer is still alive: the lane
        // holds it).
        unsafe {
            rdkafka::bindings::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdkafka::bindings::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// librdkafka's queue callback: rings the lane's doorbell.
///
/// # Safety
/// `doorbell` must point to a live [`Doorbell`] (as registered by [`Lane::split`], which keeps it
/// alive until the callback is unregistered).
unsafe extern "C" fn ring_doorbell(_: *mut rdkafka::bindings::rd_kafka_t, doorbell: *mut std::ffi::c_void) {
    // SAFETY: registered by `Lane::split` with a pointer to a live Doorbell (see there).
    let doorbell = unsafe { &*(doorbell as *const Doorbell) };
    doorbell.ring();
}

/// Wakes the consume loop when a partition queue receives records after being empty (librdkafka
/// calls the queues' callbacks from its own threads).
#[derive(Default)]
pub(super) struct Doorbell {
    rung: Mutex<bool>,
    cv: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        *self.rung.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_one();
    }

    /// Returns once rung since the last wait (at once if it was rung meanwhile: records that
    /// arrived after the loop looked are not missed), or after `timeout`.
    pub(super) fn wait(&self, timeout: Duration) {
        let rung = self.rung.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut rung, _) =
            self.cv.wait_timeout_while(rung, timeout, |r| !*r).unwrap_or_else(PoisonError::into_inner);
        *rung = false;
    }
}
