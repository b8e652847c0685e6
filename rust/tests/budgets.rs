//! Property: the byte budgets are never exceeded. For random budgets and random boxes, a
//! device-path batch either fits (its staged ranges end within `staging_bytes`, its decoded
//! arena within `decoded_bytes`) or fails with BudgetExceeded naming the knob that is too
//! small; and it fails exactly when what it needs (measured with unlimited budgets) is over
//! a budget. Geometry: shape=[24,40,40] uint16, inner=[4,8,8], shard=[8,16,16], blosc-zstd.

use std::sync::OnceLock;

use damacy::{Config, Pipeline};
use damacy::Status;
use proptest::prelude::*;

const SAMPLE: [i64; 3] = [5, 9, 7];

fn volume() -> &'static str {
    static DIR: OnceLock<String> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("damacy-budgets-{}", std::process::id()));
        damacy::write_example_volume(dir.to_str().unwrap(), &[24, 40, 40], &[4, 8, 8], &[8, 16, 16], "blosc-zstd", 4).unwrap();
        dir.to_str().unwrap().to_string()
    })
}

/// (staging bytes used, decoded bytes used) of one batch, or its error.
fn run(boxes: &[[i64; 3]], staging: u64, decoded: u64) -> Result<(u64, u64), damacy::Error> {
    let cfg = Config::from_json(&format!(
        r#"{{"samples_per_batch": {}, "sample_shape": [5, 9, 7], "n_io_threads": 2, "device": "cuda:0", "decode": "gpu", "staging_bytes": {staging}, "decoded_bytes": {decoded}}}"#,
        boxes.len()
    ))
    .unwrap();
    let p = Pipeline::new(cfg).unwrap();
    for b in boxes {
        let stops: Vec<i64> = b.iter().zip(SAMPLE).map(|(s, e)| s + e).collect();
        assert!(p.push(volume(), b, &stops).unwrap());
    }
    let b = p.pop(10.0)?;
    let used = b.decode_ops().iter().map(|o| o.src_offset + o.src_len).max().unwrap_or(0);
    Ok((used, b.decoded_bytes()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn budgets_are_never_exceeded(
        boxes in proptest::collection::vec((0i64..19, 0i64..31, 0i64..33), 1..5),
        staging in 256u64..40_000,
        decoded in 1_024u64..200_000,
    ) {
        let boxes: Vec<[i64; 3]> = boxes.into_iter().map(|(a, b, c)| [a, b, c]).collect();
        let (need_staging, need_decoded) = run(&boxes, 1 << 30, 1 << 30).expect("fits unlimited budgets");
        match run(&boxes, staging, decoded) {
            Ok((s, d)) => {
                prop_assert!(s <= staging && d <= decoded, "used {s}/{d} of {staging}/{decoded}");
                prop_assert!(need_staging <= staging && need_decoded <= decoded);
            }
            Err(e) => {
                prop_assert_eq!(e.status(), Status::BudgetExceeded, "{}", e);
                let knob = if e.message().contains("staging_bytes") { "staging" } else { "decoded" };
                prop_assert!(e.message().contains("staging_bytes") || e.message().contains("decoded_bytes"), "{}", e);
                if knob == "staging" {
                    prop_assert!(need_staging > staging, "{} (needs {need_staging})", e);
                } else {
                    prop_assert!(need_decoded > decoded, "{} (needs {need_decoded})", e);
                }
            }
        }
    }
}
