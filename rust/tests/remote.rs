//! Object stores against real servers on loopback, started here through the project venv's
//! python (`tests/remote_servers.py`): moto's S3 server and a ranged HTTP file server with
//! fault paths (403, 500-then-success, a stall, a truncated body). The same files are read
//! locally, through `s3://` and through `http://`, and must agree bit for bit.
//!
//! Fixtures: `vol.zarr`: shape=[40,48,56] uint16, zstd, inner=[8,16,16], shard=[16,32,32]:
//! 3×2×2 shards, shard c/1/1/1 deleted before upload (fill); `blosc.zarr`: the same volume
//! in blosc-zstd, unsharded chunks of [16,16,16].
//!
//! Skipped, with a message, when the venv has no moto (`dev/remote-servers.sh` installs it;
//! dev/test.sh runs that first, so CI runs these). `DAMACY_PYTHON` overrides the python.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use damacy::{Config, Pipeline};
use damacy::testing::store::{self, RangeRead, ReadOutcome, StorageOptions};
use damacy::Status;

struct Servers {
    s3: String,
    http: String,
    root: PathBuf,
    /// Held open: the servers exit when it closes, i.e. when this test process ends.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The venv's python: `DAMACY_PYTHON`, else the venv dev/venv.sh names (without creating it).
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DAMACY_PYTHON") {
        return Some(p.into());
    }
    let venv = match std::env::var_os("DAMACY_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            let out = Command::new("sha256sum").arg(repo().join("requirements-dev.txt")).output().ok()?;
            let key: String = String::from_utf8_lossy(&out.stdout).chars().take(16).collect();
            PathBuf::from(std::env::var_os("HOME")?).join(".cache/damacy").join(format!("venv-{key}"))
        }
    };
    let py = venv.join("bin/python");
    py.is_file().then_some(py)
}

fn servers() -> Option<&'static Servers> {
    static S: OnceLock<Option<Servers>> = OnceLock::new();
    S.get_or_init(|| {
        let Some(py) = python() else {
            eprintln!("SKIPPED: no project venv (run dev/venv.sh and dev/remote-servers.sh, or set DAMACY_PYTHON)");
            return None;
        };
        if !Command::new(&py).args(["-c", "import moto.server, boto3"]).status().is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: {} has no moto[server] (run dev/remote-servers.sh)", py.display());
            return None;
        }
        let root = std::env::temp_dir().join(format!("damacy-remote-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let vol = root.join("vol.zarr");
        damacy::write_example_volume(vol.to_str().unwrap(), &[40, 48, 56], &[8, 16, 16], &[16, 32, 32], "zstd", 11).unwrap();
        std::fs::remove_file(vol.join("c/1/1/1")).unwrap();
        damacy::write_example_volume(root.join("blosc.zarr").to_str().unwrap(), &[40, 48, 56], &[16, 16, 16], &[], "blosc-zstd", 11).unwrap();
        let mut child = Command::new(&py)
            .arg(repo().join("tests/remote_servers.py"))
            .arg("--root")
            .arg(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tests/remote_servers.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("servers said {line:?}: {e}"));
        let stdin = child.stdin.take().unwrap();
        Some(Servers {
            s3: v["s3"].as_str().unwrap().to_string(),
            http: v["http"].as_str().unwrap().to_string(),
            root,
            _stdin: Mutex::new(stdin),
            _child: Mutex::new(child),
        })
    })
    .as_ref()
}

fn s3_options(s: &Servers) -> StorageOptions {
    [("endpoint", s.s3.as_str()), ("allow_http", "true"), ("access_key_id", "test"), ("secret_access_key", "test"), ("region", "us-east-1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn quick(mut o: StorageOptions) -> StorageOptions {
    o.insert("timeout".into(), "1s".into());
    o.insert("max_retries".into(), "1".into());
    o.insert("retry_timeout".into(), "5s".into());
    o
}

/// Reads `boxes` (each of `shape`) from `uri` through a pipeline; one f32 vector per box.
fn read(uri: &str, options: &StorageOptions, shape: [i64; 3], boxes: &[[i64; 3]]) -> damacy::Result<Vec<Vec<f32>>> {
    let json = serde_json::json!({"samples_per_batch": 1, "sample_shape": shape, "n_io_threads": 3, "storage_options": options, "out_of_bounds": "fill"});
    let p = Pipeline::new(Config::from_json(&json.to_string())?)?;
    let mut out = Vec::new();
    for b in boxes {
        let stops: Vec<i64> = b.iter().zip(shape).map(|(a, s)| a + s).collect();
        assert!(p.push(uri, b, &stops)?);
        let mut batch = p.pop(30.0)?;
        out.push(batch.bytes().chunks_exact(4).map(|c| f32::from_ne_bytes(c.try_into().unwrap())).collect());
    }
    Ok(out)
}

/// Deterministic "random" boxes over [40,48,56], some reaching outside (fill).
fn boxes(n: usize, shape: [i64; 3]) -> Vec<[i64; 3]> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |m: i64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % m as u64) as i64
    };
    let dims = [40, 48, 56];
    (0..n).map(|_| std::array::from_fn(|d| next(dims[d] - shape[d] + 8) - 4)).collect()
}

#[test]
fn s3_and_http_reads_match_local_bit_for_bit() {
    let Some(s) = servers() else { return };
    let shape = [12, 20, 24];
    let mut bx = boxes(10, shape);
    bx.push([16, 28, 28]); // covers the deleted shard c/1/1/1: fill, as locally
    for array in ["vol.zarr", "blosc.zarr"] {
        let local = read(s.root.join(array).to_str().unwrap(), &StorageOptions::new(), shape, &bx).unwrap();
        assert!(local.iter().flatten().any(|&v| v > 0.0));
        let s3 = read(&format!("s3://damacy/{array}"), &s3_options(s), shape, &bx).unwrap();
        let http = read(&format!("{}/{array}", s.http), &StorageOptions::new(), shape, &bx).unwrap();
        for (i, ((l, a), b)) in local.iter().zip(&s3).zip(&http).enumerate() {
            assert!(l.iter().zip(a).all(|(x, y)| x.to_bits() == y.to_bits()), "{array} box {i} {:?}: s3 differs from local", bx[i]);
            assert!(l.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "{array} box {i} {:?}: http differs from local", bx[i]);
        }
    }
}

#[test]
fn store_calls_agree_with_the_local_store() {
    let Some(s) = servers() else { return };
    let local = store::open(s.root.join("vol.zarr").to_str().unwrap()).unwrap();
    for remote in [store::open_with("s3://damacy/vol.zarr", &s3_options(s)).unwrap(), store::open(&format!("{}/vol.zarr", s.http)).unwrap()] {
        let (want, _) = local.get("zarr.json", 1 << 20).unwrap().unwrap();
        let (got, info) = remote.get("zarr.json", 1 << 20).unwrap().unwrap();
        assert_eq!(got, want, "{}", remote.uri());
        assert_eq!(remote.head("zarr.json").unwrap().unwrap(), info, "head and get agree on size and generation");
        let e = remote.get("zarr.json", 10).unwrap_err();
        assert_eq!(e.status(), Status::Storage);
        assert!(e.message().contains("zarr.json") && e.message().contains("10 bytes"), "{e}");
        assert!(remote.get("c/1/1/1", 1 << 20).unwrap().is_none(), "an absent shard is absent, not an error");
        assert!(remote.head("c/1/1/1").unwrap().is_none());
        assert_eq!(remote.read_ranges("c/1/1/1", None, &mut [RangeRead { offset: 0, buf: &mut [0u8; 4] }]).unwrap(), ReadOutcome::Missing);
        // Several ranges in one call, near (coalesced) and far apart, out of order.
        let shard = "c/0/1/0";
        let size = local.head(shard).unwrap().unwrap().size;
        let spans = [(size - 100, 100), (0, 10), (20, 30), (size / 2, (size / 4) as usize)];
        let mut want: Vec<Vec<u8>> = spans.iter().map(|&(_, n)| vec![0; n]).collect();
        let mut got = want.clone();
        let mut reads: Vec<RangeRead<'_>> = spans.iter().zip(want.iter_mut()).map(|(&(o, _), b)| RangeRead { offset: o, buf: b }).collect();
        assert!(matches!(local.read_ranges(shard, None, &mut reads).unwrap(), ReadOutcome::Done(_)));
        let gen = remote.head(shard).unwrap().unwrap().generation;
        let mut reads: Vec<RangeRead<'_>> = spans.iter().zip(got.iter_mut()).map(|(&(o, _), b)| RangeRead { offset: o, buf: b }).collect();
        assert!(matches!(remote.read_ranges(shard, Some(&gen), &mut reads).unwrap(), ReadOutcome::Done(_)));
        assert_eq!(got, want, "{}", remote.uri());
        let e = remote.read_ranges(shard, None, &mut [RangeRead { offset: size - 2, buf: &mut [0u8; 4] }]).unwrap_err();
        assert!(e.message().contains("past the end"), "{e}");
    }
    assert!(store::open_with("s3://damacy/vol.zarr", &s3_options(s)).unwrap().du().unwrap().0 > 5, "S3 lists the prefix");
}

#[test]
fn a_rewritten_object_reads_as_changed() {
    let Some(s) = servers() else { return };
    // HTTP: the server's ETag follows the file's size and mtime.
    let dir = s.root.join("scratch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("obj"), b"generation one").unwrap();
    let http = store::open(&format!("{}/scratch", s.http)).unwrap();
    let first = http.head("obj").unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.join("obj"), b"generation two").unwrap();
    let out = http.read_ranges("obj", Some(&first.generation), &mut [RangeRead { offset: 0, buf: &mut [0u8; 4] }]).unwrap();
    assert!(matches!(&out, ReadOutcome::Changed(i) if i.generation != first.generation), "{out:?}");
    // S3: the same key written twice.
    let put = |body: &'static [u8]| {
        let py = python().unwrap();
        let code = "import sys,boto3; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t').put_object(Bucket='damacy', Key='scratch/obj', Body=sys.argv[2].encode())";
        assert!(Command::new(py).args(["-c", code, &s.s3, std::str::from_utf8(body).unwrap()]).status().unwrap().success());
    };
    put(b"generation one");
    let s3 = store::open_with("s3://damacy/scratch", &s3_options(s)).unwrap();
    let first = s3.head("obj").unwrap().unwrap();
    assert!(first.generation.to_string().starts_with("etag:"), "{}", first.generation);
    put(b"generation two");
    let mut buf = [0u8; 4];
    let out = s3.read_ranges("obj", Some(&first.generation), &mut [RangeRead { offset: 0, buf: &mut buf }]).unwrap();
    assert!(matches!(&out, ReadOutcome::Changed(i) if i.generation != first.generation), "{out:?}");
}

#[test]
fn a_missing_bucket_or_array_is_not_found() {
    let Some(s) = servers() else { return };
    let e = store::open_with("s3://no-such-bucket/vol.zarr", &s3_options(s)).unwrap().get("zarr.json", 1 << 20).unwrap_err();
    assert_eq!(e.status(), Status::NotFound, "{e}");
    assert!(e.message().contains("s3://no-such-bucket/vol.zarr/zarr.json") && e.message().contains("bucket"), "{e}");
    for (uri, opts) in [("s3://damacy/absent.zarr".to_string(), s3_options(s)), (format!("{}/absent.zarr", s.http), StorageOptions::new()), ("s3://no-such-bucket/vol.zarr".to_string(), s3_options(s))] {
        let e = read(&uri, &opts, [4, 4, 4], &[[0, 0, 0]]).unwrap_err();
        assert_eq!(e.status(), Status::NotFound, "{uri}: {e}");
        assert!(e.message().contains(&uri), "{e}");
    }
}

#[test]
fn forbidden_is_a_storage_error_naming_the_status() {
    let Some(s) = servers() else { return };
    let uri = format!("{}/forbidden/vol.zarr", s.http);
    let e = store::open(&uri).unwrap().get("zarr.json", 1 << 20).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
    assert!(e.message().contains("403") && e.message().contains(&format!("{uri}/zarr.json")), "{e}");
    let e = read(&uri, &StorageOptions::new(), [4, 4, 4], &[[0, 0, 0]]).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
}

#[test]
fn a_server_error_is_retried() {
    let Some(s) = servers() else { return };
    let shape = [12, 20, 24];
    let bx = boxes(3, shape);
    let local = read(s.root.join("vol.zarr").to_str().unwrap(), &StorageOptions::new(), shape, &bx).unwrap();
    let flaky = read(&format!("{}/flaky/vol.zarr", s.http), &StorageOptions::new(), shape, &bx).unwrap();
    assert_eq!(local, flaky, "every first request answered 500; the retries read the same bytes");
    let no_retry = StorageOptions::from([("max_retries".to_string(), "0".to_string())]);
    let e = store::open_with(&format!("{}/flaky/blosc.zarr", s.http), &no_retry).unwrap().get("zarr.json", 1 << 20).unwrap_err();
    assert_eq!(e.status(), Status::Storage);
    assert!(e.message().contains("500"), "{e}");
}

#[test]
fn a_stalled_server_times_out_with_a_typed_error() {
    let Some(s) = servers() else { return };
    let uri = format!("{}/stall/vol.zarr", s.http);
    let store = store::open_with(&uri, &quick(StorageOptions::new())).unwrap();
    let t0 = Instant::now();
    let e = store.get("zarr.json", 1 << 20).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
    assert!(e.message().contains("zarr.json"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(15), "bounded by timeout and retries: {:?}", t0.elapsed());
    let t0 = Instant::now();
    let e = store.read_ranges("c/0/0/0", None, &mut [RangeRead { offset: 0, buf: &mut [0u8; 16] }]).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_truncated_body_is_an_error_not_short_data() {
    let Some(s) = servers() else { return };
    let store = store::open_with(&format!("{}/truncate/vol.zarr", s.http), &quick(StorageOptions::new())).unwrap();
    let e = store.get("zarr.json", 1 << 20).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
    assert!(e.message().contains("zarr.json"), "{e}");
    let mut buf = vec![0u8; 4096];
    let e = store.read_ranges("c/0/0/0", None, &mut [RangeRead { offset: 0, buf: &mut buf }]).unwrap_err();
    assert_eq!(e.status(), Status::Storage, "{e}");
}

#[test]
fn unknown_storage_options_are_refused() {
    let e = Config::from_json(r#"{"storage_options": {"endpiont": "http://127.0.0.1:1"}}"#).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
    assert!(e.message().contains("endpiont"), "{e}");
    let e = store::open_with("s3://b/x", &StorageOptions::from([("google_service_account".to_string(), "x".to_string())])).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument, "a GCS key on an S3 uri");
}
