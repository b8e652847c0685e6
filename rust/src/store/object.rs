//! Object stores: S3 (`s3://bucket/prefix`), Google Cloud Storage (`gs://`), Azure Blob
//! Storage (`az://container/prefix`, `abfs[s]://container@account.dfs.core.windows.net/…`)
//! and plain HTTP(S) servers with Range support (`http[s]://host/path`), all through the
//! `object_store` crate (dev/decisions.md says why that crate and not zarrs' adapters).
//!
//! Credentials and endpoints come the standard way: each builder's `from_env()` (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`; `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP` for S3-compatible
//! servers; `AWS_SKIP_SIGNATURE=true` for anonymous reads), then the pipeline's
//! `storage_options` on top (object_store's own keys, e.g. `endpoint`, `region`,
//! `skip_signature`, `timeout`, plus ours: [`MAX_IN_FLIGHT`], [`MAX_RETRIES`],
//! [`RETRY_TIMEOUT`], [`READ_GAP`]).
//!
//! Sync over async: the [`Store`] trait is synchronous and called from the I/O pool's
//! threads. Every store of a process shares one small multi-thread tokio runtime owned by
//! this module; each call blocks its calling thread on its own future (`block_on`), so
//! concurrency is the pool's, plus the ranges of one `read_ranges` call, which go out
//! together (nearby ones coalesced) under a per-store cap of requests in flight. The runtime
//! belongs to the process that made it: after a `fork` (DataLoader workers) the child makes
//! its own, and a store opened before the fork refuses to be used in the child instead of
//! hanging on a runtime whose threads did not survive.
//!
//! Generation: `etag:<ETag>` when the server sends one, else `lm:<Last-Modified>:<size>`.
//! Reads under an expected ETag send `If-Match`, and every response's own ETag (or date and
//! size) is compared again, so a server that ignores `If-Match` is caught too: a mismatch is
//! [`ReadOutcome::Changed`], as for a rewritten local file.
//!
//! Bounds: a whole-object `get` checks the response's length against `max_len` before
//! reading its body, and stops reading one byte past it whatever the server claimed; a
//! ranged read streams into the caller's buffers and fails on a short or long body.
//! Timeouts and retries (with exponential backoff) are object_store's; the defaults here:
//! 5 s to connect, 30 s per request, 3 retries within 60 s.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::path::{Path, PathPart};
use object_store::{BackoffConfig, ClientConfigKey, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;

use super::{Generation, ObjectInfo, RangeRead, ReadOutcome, Store, LOCAL_READ_GAP};
use crate::error::{err, Error, Result};

/// Per-pipeline storage options: object_store configuration keys and ours, by name.
pub type StorageOptions = BTreeMap<String, String>;

/// Option: most requests one store has in flight at once (default 64).
pub(crate) const MAX_IN_FLIGHT: &str = "max_requests_in_flight";
/// Option: retries of a failed request (5xx, connection errors, timeouts; default 3).
pub(crate) const MAX_RETRIES: &str = "max_retries";
/// Option: no retry starts later than this after the first attempt (default "60s").
pub(crate) const RETRY_TIMEOUT: &str = "retry_timeout";
/// Option: chunk ranges of one object closer than this many bytes are fetched by one request
/// (default [`SERVICE_READ_GAP`] on S3, GCS and Azure, [`LOCAL_READ_GAP`] on plain HTTP).
pub(crate) const READ_GAP: &str = "coalesce_gap_bytes";
/// Our options.
const OURS: [&str; 4] = [MAX_IN_FLIGHT, MAX_RETRIES, RETRY_TIMEOUT, READ_GAP];

const DEFAULT_MAX_IN_FLIGHT: usize = 64;
const DEFAULT_MAX_RETRIES: usize = 3;
const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_mins(1);
const DEFAULT_CONNECT_TIMEOUT: &str = "5s";
const DEFAULT_TIMEOUT: &str = "30s";
/// The read gap on S3, GCS and Azure: chunk ranges of one object closer than this are
/// fetched by one request. There a request costs a round trip of tens of milliseconds to
/// its first byte plus the service's per-request work (and price), a gap only its bytes:
/// 256 KiB take ~2.6 ms at 100 MB/s. In bench/bench_remote.py (moto, whose per-request CPU
/// bounds it) this halved the requests per batch and doubled the rate; on plain HTTP, where
/// a request is cheap and the same bytes cost 10-20% under a 100 MB/s cap, the local 64 KiB
/// stays (dev/perf.md, issue 12). object_store's own default for merging ranges is 1 MiB.
const SERVICE_READ_GAP: u64 = 256 << 10;
/// A coalesced request never grows past this.
const MAX_COALESCED: u64 = 16 << 20;
/// Worker threads of the shared runtime (they only drive sockets and timers).
const RUNTIME_THREADS: usize = 2;

/// The schemes this backend reads.
pub(super) const SCHEMES: [&str; 7] = ["s3", "gs", "az", "abfs", "abfss", "http", "https"];

/// The process's runtime, with the id of the process that built it.
static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

/// The shared runtime of this process (made on first use, and again in a forked child).
fn runtime() -> Result<Arc<Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(Arc::clone(rt));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(RUNTIME_THREADS)
        .thread_name("damacy-net")
        .enable_all()
        .build()
        .map_err(|e| err!(Storage, "cannot start the object store runtime: {e}"))?;
    let rt = Arc::new(rt);
    if let Some((_, inherited)) = slot.replace((pid, Arc::clone(&rt))) {
        // Inherited through fork: its threads do not exist here, so dropping it could wait
        // on them forever. Leaked (once per fork).
        std::mem::forget(inherited);
    }
    Ok(rt)
}

/// `true` when `key` names an option some backend (or damacy) understands.
pub(crate) fn known_option(key: &str) -> bool {
    OURS.contains(&key)
        || AmazonS3ConfigKey::from_str(key).is_ok()
        || GoogleConfigKey::from_str(key).is_ok()
        || AzureConfigKey::from_str(key).is_ok()
        || ClientConfigKey::from_str(key).is_ok()
}

/// An array under an object store prefix.
#[derive(Debug)]
pub(super) struct ObjectStoreBackend {
    uri: String,
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    runtime: Arc<Runtime>,
    pid: u32,
    permits: Semaphore,
    max_in_flight: usize,
    read_gap: u64,
    listable: bool,
}

/// What one request found.
enum Fetched {
    Done(ObjectInfo),
    Changed(ObjectInfo),
    /// `If-Match` failed: changed, generation not known yet.
    Precondition,
    Missing,
}

fn parse_duration(key: &str, v: &str) -> Result<Duration> {
    let v = v.trim();
    let (num, scale) = if let Some(ms) = v.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(s) = v.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = v.strip_suffix('m') {
        (m, 60.0)
    } else {
        (v, 1.0)
    };
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x >= 0.0 && *x * scale < 1e9)
        .map(|x| Duration::from_secs_f64(x * scale))
        .ok_or_else(|| err!(InvalidArgument, "storage option `{key}`: expected a duration such as \"30s\" or \"500ms\", found {v:?}"))
}

fn parse_count(key: &str, v: &str, min: usize) -> Result<usize> {
    v.trim().parse::<usize>().ok().filter(|&n| n >= min).ok_or_else(|| err!(InvalidArgument, "storage option `{key}`: expected an integer of at least {min}, found {v:?}"))
}

fn unknown_key(uri: &str, backend: &str, key: &str) -> Error {
    err!(InvalidArgument, "{uri}: storage option `{key}` is not a {backend} option (object_store's configuration keys, or {MAX_IN_FLIGHT}, {MAX_RETRIES}, {RETRY_TIMEOUT}, {READ_GAP})")
}

/// The S3, GCS and Azure builders with the user's keys applied (an unknown key is an
/// InvalidArgument naming the service), then our connect and request timeouts where the
/// user set none. A macro because object_store has no builder trait: the three builders
/// only share the method names (`with_config`, `get_config_value`) and a `Client` variant
/// of their config key enums.
macro_rules! configured {
    ($builder:expr, $key:ident, $service:literal, $uri:expr, $theirs:expr) => {
        'configured: {
            let mut b = $builder;
            for (k, v) in $theirs {
                let Ok(key) = $key::from_str(k) else { break 'configured Err(unknown_key($uri, $service, k)) };
                b = b.with_config(key, v);
            }
            for (key, default) in [(ClientConfigKey::ConnectTimeout, DEFAULT_CONNECT_TIMEOUT), (ClientConfigKey::Timeout, DEFAULT_TIMEOUT)] {
                let key = $key::Client(key);
                if b.get_config_value(&key).is_none() {
                    b = b.with_config(key, default);
                }
            }
            Ok::<_, Error>(b)
        }
    };
}

impl ObjectStoreBackend {
    /// The store for `url` (scheme checked by the caller, one of [`SCHEMES`]).
    pub(super) fn open(uri: &str, url: &url::Url, options: &StorageOptions) -> Result<Self> {
        let build_err = |e: object_store::Error| err!(InvalidArgument, "{uri}: cannot configure the object store: {e}");
        let mut ours: BTreeMap<&str, &str> = BTreeMap::new();
        let mut theirs: Vec<(&str, &str)> = Vec::new();
        for (k, v) in options {
            if OURS.contains(&k.as_str()) {
                ours.insert(k, v);
            } else {
                theirs.push((k, v));
            }
        }
        let max_in_flight = ours.get(MAX_IN_FLIGHT).map_or(Ok(DEFAULT_MAX_IN_FLIGHT), |v| parse_count(MAX_IN_FLIGHT, v, 1))?;
        let default_gap = if matches!(url.scheme(), "http" | "https") { LOCAL_READ_GAP } else { SERVICE_READ_GAP };
        let read_gap = ours.get(READ_GAP).map_or(Ok(default_gap), |v| parse_count(READ_GAP, v, 0).map(|n| n as u64))?;
        let retry = RetryConfig {
            backoff: BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5), base: 2.0 },
            max_retries: ours.get(MAX_RETRIES).map_or(Ok(DEFAULT_MAX_RETRIES), |v| parse_count(MAX_RETRIES, v, 0))?,
            retry_timeout: ours.get(RETRY_TIMEOUT).map_or(Ok(DEFAULT_RETRY_TIMEOUT), |v| parse_duration(RETRY_TIMEOUT, v))?,
        };
        if url.query().is_some() || url.fragment().is_some() {
            return Err(err!(InvalidArgument, "{uri}: an array uri may not carry a query or fragment (keys are appended to its path)"));
        }
        let prefix = Path::from_url_path(url.path()).map_err(|e| err!(InvalidArgument, "{uri}: not a valid object path: {e}"))?;
        let host = url.host_str().unwrap_or_default();
        let (inner, listable): (Arc<dyn ObjectStore>, bool) = match url.scheme() {
            "s3" => {
                if host.is_empty() {
                    return Err(err!(InvalidArgument, "{uri}: expected s3://BUCKET/PREFIX"));
                }
                let b = configured!(AmazonS3Builder::from_env().with_bucket_name(host).with_retry(retry), AmazonS3ConfigKey, "S3", uri, theirs)?;
                (Arc::new(b.build().map_err(build_err)?), true)
            }
            "gs" => {
                if host.is_empty() {
                    return Err(err!(InvalidArgument, "{uri}: expected gs://BUCKET/PREFIX"));
                }
                let b = configured!(GoogleCloudStorageBuilder::from_env().with_bucket_name(host).with_retry(retry), GoogleConfigKey, "Google Cloud Storage", uri, theirs)?;
                (Arc::new(b.build().map_err(build_err)?), true)
            }
            "az" | "abfs" | "abfss" => {
                let b = configured!(MicrosoftAzureBuilder::from_env().with_url(url.as_str()).with_retry(retry), AzureConfigKey, "Azure", uri, theirs)?;
                (Arc::new(b.build().map_err(build_err)?), true)
            }
            _ => {
                // Plain HTTP(S): the origin is the store, the url's path the prefix. An
                // `http://` uri asks for plain HTTP, so it is allowed for it.
                let origin = url.origin().ascii_serialization();
                let mut b = HttpBuilder::new()
                    .with_url(origin)
                    .with_retry(retry)
                    .with_config(ClientConfigKey::ConnectTimeout, DEFAULT_CONNECT_TIMEOUT)
                    .with_config(ClientConfigKey::Timeout, DEFAULT_TIMEOUT)
                    .with_config(ClientConfigKey::AllowHttp, if url.scheme() == "http" { "true" } else { "false" });
                for (k, v) in theirs {
                    let key = ClientConfigKey::from_str(k).map_err(|_| unknown_key(uri, "HTTP", k))?;
                    b = b.with_config(key, v);
                }
                (Arc::new(b.build().map_err(build_err)?), false)
            }
        };
        Ok(Self {
            uri: uri.trim_end_matches('/').to_string(),
            inner,
            prefix,
            runtime: runtime()?,
            pid: std::process::id(),
            permits: Semaphore::new(max_in_flight),
            max_in_flight,
            read_gap,
            listable,
        })
    }

    fn path(&self, key: &str) -> Path {
        self.prefix.parts().chain(key.split('/').filter(|p| !p.is_empty()).map(PathPart::from)).collect()
    }

    /// Runs `f` to completion on the shared runtime, blocking this thread.
    fn block_on<F: Future>(&self, f: F) -> Result<F::Output> {
        if std::process::id() != self.pid {
            return Err(err!(Storage, "{}: this store was opened in another process (before a fork); open the array again in this one", self.uri));
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(err!(Internal, "{}: store called from inside an async runtime", self.uri));
        }
        Ok(self.runtime.block_on(f))
    }

    /// The typed error for a failed `op` on `key`: NotFound for a missing bucket or
    /// container, else Storage; both name the object and the HTTP status where known.
    fn error(&self, key: &str, op: &str, e: &object_store::Error) -> Error {
        let text = e.to_string();
        let status_text = http_status(e, &text).map(|s| format!(" (HTTP {s})")).unwrap_or_default();
        let no_bucket = ["NoSuchBucket", "ContainerNotFound", "The specified bucket does not exist"].iter().any(|m| text.contains(m));
        if no_bucket {
            return err!(NotFound, "{}: the bucket or container does not exist{status_text}: {text}", self.describe(key));
        }
        let what = match e {
            object_store::Error::PermissionDenied { .. } => "access denied",
            object_store::Error::Unauthenticated { .. } => "not authenticated",
            _ => "failed",
        };
        err!(Storage, "{}: {op} {what}{status_text}: {text}", self.describe(key))
    }

    /// `Ok(None)` for a missing object, the typed error for the rest.
    fn absent<T>(&self, key: &str, op: &str, e: &object_store::Error) -> Result<Option<T>> {
        match e {
            object_store::Error::NotFound { .. } => {
                let missing_bucket = self.error(key, op, e);
                if missing_bucket.status() == crate::error::Status::NotFound {
                    Err(missing_bucket)
                } else {
                    Ok(None)
                }
            }
            _ => Err(self.error(key, op, e)),
        }
    }

    /// One ranged request for `range`, streamed into the `reads` inside it.
    async fn fetch_into(&self, key: &str, path: &Path, range: Range<u64>, mut reads: Vec<&mut RangeRead<'_>>, expect: Option<&Generation>) -> Result<Fetched> {
        let _permit = self.permits.acquire().await.map_err(|_| err!(Internal, "{}: request permits closed", self.uri))?;
        let opts = GetOptions { range: Some(GetRange::Bounded(range.clone())), if_match: expect.and_then(etag_of).map(str::to_string), ..GetOptions::default() };
        let res = match self.inner.get_opts(path, opts).await {
            Ok(r) => r,
            Err(object_store::Error::Precondition { .. }) => return Ok(Fetched::Precondition),
            Err(e) => {
                self.absent::<()>(key, "read", &e)?;
                return Ok(Fetched::Missing);
            }
        };
        let info = info_of(&res.meta);
        if expect.is_some_and(|g| *g != info.generation) {
            return Ok(Fetched::Changed(info));
        }
        let len = range.end - range.start;
        if range.end > info.size {
            return Err(err!(Storage, "{}: read of {len} bytes at offset {} runs past the end of the {}-byte object", self.describe(key), range.start, info.size));
        }
        let mut pos = range.start;
        let mut body = res.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.error(key, &format!("read of {len} bytes at offset {}", range.start), &e))?;
            let end = pos + chunk.len() as u64;
            if end > range.end {
                return Err(err!(Storage, "{}: the server sent more than the {len} bytes asked for at offset {}", self.describe(key), range.start));
            }
            for r in &mut reads {
                let (lo, hi) = (pos.max(r.offset), end.min(r.offset + r.buf.len() as u64));
                if lo < hi {
                    r.buf[(lo - r.offset) as usize..(hi - r.offset) as usize].copy_from_slice(&chunk[(lo - pos) as usize..(hi - pos) as usize]);
                }
            }
            pos = end;
        }
        if pos != range.end {
            return Err(err!(
                Storage,
                "{}: truncated response: {} of the {len} bytes at offset {} arrived ({}-byte object)",
                self.describe(key),
                pos - range.start,
                range.start,
                info.size
            ));
        }
        Ok(Fetched::Done(info))
    }
}

/// The ETag inside an `etag:` generation.
fn etag_of(g: &Generation) -> Option<&str> {
    g.0.strip_prefix("etag:")
}

fn info_of(meta: &ObjectMeta) -> ObjectInfo {
    let generation = match &meta.e_tag {
        Some(tag) => Generation::new(format!("etag:{tag}")),
        None => Generation::new(format!("lm:{}:{}", meta.last_modified.timestamp_nanos_opt().unwrap_or_default(), meta.size)),
    };
    ObjectInfo { size: meta.size, generation }
}

/// The HTTP status of the failed request behind `e`, where it says. object_store does not
/// export its request error type, so the status is read from the variant (404, 403, 401,
/// 412) or from the message it renders ("status code: 500 ...").
fn http_status(e: &object_store::Error, text: &str) -> Option<u16> {
    let from_variant = match e {
        object_store::Error::NotFound { .. } => Some(404),
        object_store::Error::PermissionDenied { .. } => Some(403),
        object_store::Error::Unauthenticated { .. } => Some(401),
        object_store::Error::Precondition { .. } => Some(412),
        _ => None,
    };
    from_variant.or_else(|| text.split_once("status code: ").and_then(|(_, rest)| rest.get(..3)).and_then(|d| d.parse::<u16>().ok()))
}

impl Store for ObjectStoreBackend {
    fn is_remote(&self) -> bool {
        true
    }

    fn read_gap(&self) -> u64 {
        self.read_gap
    }

    fn uri(&self) -> &str {
        &self.uri
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(key);
        match self.block_on(self.inner.head(&path))? {
            Ok(meta) => Ok(Some(info_of(&meta))),
            Err(e) => self.absent(key, "head", &e),
        }
    }

    fn get(&self, key: &str, max_len: u64) -> Result<Option<(Vec<u8>, ObjectInfo)>> {
        let path = self.path(key);
        self.block_on(async {
            let res = match self.inner.get_opts(&path, GetOptions::default()).await {
                Ok(r) => r,
                Err(e) => return self.absent(key, "get", &e),
            };
            let info = info_of(&res.meta);
            if info.size > max_len {
                return Err(err!(Storage, "{}: {} bytes, more than the {max_len} bytes such an object may have", self.describe(key), info.size));
            }
            let mut bytes = Vec::new();
            bytes.try_reserve_exact(info.size as usize).map_err(|_| err!(OutOfMemory, "{}: cannot allocate {} bytes", self.describe(key), info.size))?;
            let mut body = res.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.error(key, "get", &e))?;
                // Whatever the length header said, never more than one byte past the cap.
                if (bytes.len() + chunk.len()) as u64 > max_len {
                    return Err(err!(Storage, "{}: more than the {max_len} bytes such an object may have", self.describe(key)));
                }
                bytes.extend_from_slice(&chunk);
            }
            if bytes.len() as u64 != info.size {
                return Err(err!(Storage, "{}: truncated response: {} of {} bytes arrived", self.describe(key), bytes.len(), info.size));
            }
            Ok(Some((bytes, info)))
        })?
    }

    fn read_ranges(&self, key: &str, expect: Option<&Generation>, ranges: &mut [RangeRead<'_>]) -> Result<ReadOutcome> {
        let mut wanted: Vec<&mut RangeRead<'_>> = Vec::with_capacity(ranges.len());
        for r in ranges.iter_mut() {
            if r.offset.checked_add(r.buf.len() as u64).is_none() {
                return Err(err!(Storage, "{}: read of {} bytes at offset {} overflows", self.describe(key), r.buf.len(), r.offset));
            }
            if !r.buf.is_empty() {
                wanted.push(r);
            }
        }
        if wanted.is_empty() {
            return Ok(match self.head(key)? {
                None => ReadOutcome::Missing,
                Some(info) if expect.is_some_and(|g| *g != info.generation) => ReadOutcome::Changed(info),
                Some(info) => ReadOutcome::Done(info),
            });
        }
        wanted.sort_by_key(|r| r.offset);
        let mut groups: Vec<(Range<u64>, Vec<&mut RangeRead<'_>>)> = Vec::new();
        for r in wanted {
            let (start, end) = (r.offset, r.offset + r.buf.len() as u64);
            match groups.last_mut() {
                Some((g, members)) if start <= g.end.saturating_add(self.read_gap) && end.max(g.end) - g.start <= MAX_COALESCED => {
                    g.end = g.end.max(end);
                    members.push(r);
                }
                _ => groups.push((start..end, vec![r])),
            }
        }
        let path = self.path(key);
        let fetched: Vec<Fetched> = self.block_on(
            futures_util::stream::iter(groups.into_iter().map(|(range, members)| self.fetch_into(key, &path, range, members, expect)))
                .buffer_unordered(self.max_in_flight)
                .try_collect(),
        )??;
        let mut done = None;
        for f in fetched {
            match f {
                Fetched::Missing => return Ok(ReadOutcome::Missing),
                Fetched::Changed(info) => return Ok(ReadOutcome::Changed(info)),
                Fetched::Precondition => {
                    return Ok(match self.head(key)? {
                        None => ReadOutcome::Missing,
                        Some(info) => ReadOutcome::Changed(info),
                    })
                }
                Fetched::Done(info) => {
                    // Two answers from two generations: the object changed mid-call.
                    if done.as_ref().is_some_and(|d: &ObjectInfo| d.generation != info.generation) {
                        return Ok(ReadOutcome::Changed(info));
                    }
                    done = Some(info);
                }
            }
        }
        done.map(ReadOutcome::Done).ok_or_else(|| err!(Internal, "{}: no read was made", self.describe(key)))
    }

    fn du(&self) -> Result<(u64, u64)> {
        if !self.listable {
            return Err(err!(Storage, "{}: a plain HTTP server cannot list objects, so stored bytes are unknown (use usage=false)", self.uri));
        }
        let prefix = (!self.prefix.is_root()).then_some(&self.prefix);
        self.block_on(self.inner.list(prefix).try_fold((0u64, 0u64), |(n, b), m| async move { Ok((n + 1, b.saturating_add(m.size))) }))?
            .map_err(|e| self.error("", "list", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn durations_counts_and_keys_parse() {
        assert_eq!(parse_duration("k", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("k", "2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("k", "1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("k", "-1s").unwrap_err().status(), Status::InvalidArgument);
        assert!(parse_count(MAX_IN_FLIGHT, "0", 1).unwrap_err().message().contains(MAX_IN_FLIGHT));
        for k in ["endpoint", "aws_endpoint", "region", "skip_signature", "timeout", "google_service_account", "azure_storage_account_name", MAX_RETRIES] {
            assert!(known_option(k), "{k}");
        }
        assert!(!known_option("endpont"));
    }

    #[test]
    fn uris_map_to_bucket_and_prefix() {
        let url = url::Url::parse("s3://bucket/a%20b/arr.zarr/").unwrap();
        let s = ObjectStoreBackend::open("s3://bucket/a%20b/arr.zarr/", &url, &StorageOptions::from([("region".into(), "us-east-1".into())])).unwrap();
        assert_eq!(s.uri(), "s3://bucket/a%20b/arr.zarr");
        assert_eq!(s.path("c/0/1").as_ref(), "a b/arr.zarr/c/0/1");
        let bad = ObjectStoreBackend::open("s3://b/x", &url::Url::parse("s3://b/x").unwrap(), &StorageOptions::from([("endpont".into(), "x".into())])).unwrap_err();
        assert!(bad.message().contains("endpont"), "{bad}");
        let q = ObjectStoreBackend::open("http://h/x?a=1", &url::Url::parse("http://h/x?a=1").unwrap(), &StorageOptions::new()).unwrap_err();
        assert_eq!(q.status(), Status::InvalidArgument);
        let h = ObjectStoreBackend::open("http://h:9/x", &url::Url::parse("http://h:9/x").unwrap(), &StorageOptions::new()).unwrap();
        assert_eq!(h.path("zarr.json").as_ref(), "x/zarr.json");
        assert!(h.du().unwrap_err().message().contains("cannot list"));
    }

    #[test]
    fn read_gap_is_per_service_and_settable() {
        let open = |uri: &str, opts: &[(&str, &str)]| {
            let options: StorageOptions = opts.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
            ObjectStoreBackend::open(uri, &url::Url::parse(uri).unwrap(), &options)
        };
        let region = [("region", "us-east-1")];
        assert_eq!(open("s3://b/x", &region).unwrap().read_gap(), SERVICE_READ_GAP);
        assert_eq!(open("http://h:9/x", &[]).unwrap().read_gap(), LOCAL_READ_GAP);
        const { assert!(SERVICE_READ_GAP > LOCAL_READ_GAP) };
        assert_eq!(open("s3://b/x", &[("region", "us-east-1"), (READ_GAP, "0")]).unwrap().read_gap(), 0);
        assert_eq!(open("http://h:9/x", &[(READ_GAP, "1048576")]).unwrap().read_gap(), 1 << 20);
        for bad in ["-1", "64k", ""] {
            let e = open("http://h:9/x", &[(READ_GAP, bad)]).unwrap_err();
            assert!(e.status() == Status::InvalidArgument && e.message().contains(READ_GAP), "{bad}: {e}");
        }
        assert!(known_option(READ_GAP));
    }
}
