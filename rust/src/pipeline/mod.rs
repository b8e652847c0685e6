//! pipeline: the public object. Owns the config, caches, worker pool and output buffer
//! pool; orders batches by push order.

mod config;
pub use config::{Config, OutDtype};

use crate::error::{err, Result};

/// A running pipeline.
pub struct Pipeline {
    cfg: Config,
}

/// One finished batch.
pub struct Batch {
    buf: Vec<u8>,
    shape: Vec<i64>,
    dtype: OutDtype,
}

impl Pipeline {
    /// Starts a pipeline.
    ///
    /// # Errors
    /// InvalidArgument for an invalid config.
    pub fn new(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        Ok(Self { cfg })
    }
    pub(crate) fn push(&self, _uri: &str, _starts: &[i64], _stops: &[i64]) -> Result<bool> {
        Err(err!(InvalidArgument, "not implemented"))
    }
    pub(crate) fn pop(&self, _timeout_s: f64) -> Result<Box<Batch>> {
        Err(err!(TryAgain, "not implemented {}", self.cfg.samples_per_batch))
    }
    pub(crate) fn pending_samples(&self) -> u64 { 0 }
    pub(crate) fn stats_json(&self) -> String { "{}".into() }
    pub(crate) fn close(&self) {}
}

impl Batch {
    pub(crate) fn bytes(&mut self) -> &mut [u8] { &mut self.buf }
    pub(crate) fn shape(&self) -> Vec<i64> { self.shape.clone() }
    pub(crate) fn dtype(&self) -> String { self.dtype.name().into() }
    pub(crate) fn samples_json(&self) -> String { "[]".into() }
}

/// Array facts as JSON.
///
/// # Errors
/// NotFound, Storage.
pub fn array_info_json(uri: &str) -> Result<String> {
    Err(err!(NotFound, "{uri}"))
}
