//! Per-sample transforms pushed with their samples (Augment fused into assemble): checked at
//! push, carried with the sample to its batch, applied where the batch is made: on the CPU
//! path by the pipeline's workers once the batch's copies are written (one job per sample,
//! [`apply_after_assemble`]), on the device path by the extension's assemble kernel
//! ([`of_batch`] hands them over). The record and its meaning: `ffi::SampleTransform`,
//! dev/ops.md.

use std::cell::RefCell;

use super::batch::{spawn_job, InFlight};
use super::Config;
use crate::assemble::{self, OutBuffer};
use crate::error::{err, Error};
use crate::ffi::records::SampleTransform;
use crate::io::Spawner;

/// Axis-map slots of a transform word (damacy::augment's kAugmentMaxDims).
const MAP_SLOTS: usize = 8;

/// Why `t` cannot be applied to the samples of `cfg` (`None`: it can). A bad transform fails
/// its sample's batch, like every other problem with a sample.
pub(super) fn check(cfg: &Config, uri: &str, t: &SampleTransform) -> Option<Error> {
    let shape = &cfg.sample_shape;
    let rank = shape.len();
    if rank > MAP_SLOTS {
        return Some(err!(InvalidArgument, "{uri}: sample transforms take samples of at most {MAP_SLOTS} dims, found {rank}"));
    }
    // Output axis -e (byte e-1) reads source axis -s (s = code & 0xf, 0: itself), backwards
    // when bit 4 is set; axes before the sample's rank must stay as they are.
    let mut used = 0u32;
    for e in 1..=MAP_SLOTS {
        let code = (t.map >> (8 * (e - 1))) & 0xff;
        if e > rank {
            if code != 0 {
                return Some(err!(InvalidArgument, "{uri}: transform map {:#x} moves axis -{e} of a {rank}-dim sample", t.map));
            }
            continue;
        }
        let s = match (code & 0xf) as usize {
            0 => e,
            s => s,
        };
        if code & !0x1f != 0 || s > rank {
            return Some(err!(InvalidArgument, "{uri}: transform map {:#x}: byte {} ({code:#x}) names no axis of a {rank}-dim sample", t.map, e - 1));
        }
        if shape[rank - e] != shape[rank - s] {
            return Some(err!(InvalidArgument, "{uri}: transform map {:#x} pairs axes -{e} and -{s} of extents {} and {}", t.map, shape[rank - e], shape[rank - s]));
        }
        used |= 1 << s;
    }
    if used.count_ones() as usize != rank {
        return Some(err!(InvalidArgument, "{uri}: transform map {:#x} is not a permutation of the sample's {rank} axes", t.map));
    }
    if t.intensity {
        if !cfg.dtype.is_float() {
            return Some(err!(InvalidArgument, "{uri}: a transform with intensity needs a floating-point dtype, found {:?}", cfg.dtype));
        }
        if !(t.scale.is_finite() && t.shift.is_finite()) {
            return Some(err!(InvalidArgument, "{uri}: transform scale {} / shift {} must be finite", t.scale, t.shift));
        }
        if !(t.noise_factor.is_finite() && t.noise_factor <= 0.0) {
            return Some(err!(InvalidArgument, "{uri}: transform noise_factor {} must be finite and <= 0 (-2 * noise_std**2)", t.noise_factor));
        }
        let voxels = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if t.noise_factor != 0.0 && voxels.is_none_or(|v| v >= 1 << 32) {
            return Some(err!(InvalidArgument, "{uri}: transform noise needs samples of fewer than 2**32 elements"));
        }
    }
    None
}

thread_local! {
    /// A worker's copy of the sample it transforms (one sample's bytes at most, kept).
    static SCRATCH: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// CPU path: queues, for when the batch's copies and fills have all been written, one job
/// per sample whose transform does something (geometry and intensity in place,
/// `assemble::apply_transform`, through the worker's scratch copy). A batch without
/// transforms gets no phase and no job.
pub(super) fn apply_after_assemble(pool: &Spawner, batch: &InFlight, out: OutBuffer) {
    let todo: Vec<(usize, SampleTransform)> =
        batch.samples.iter().enumerate().filter_map(|(i, s)| s.transform.filter(|t| t.map != 0 || t.intensity).map(|t| (i, t))).collect();
    if todo.is_empty() {
        return;
    }
    let pool = pool.clone();
    batch.then(Box::new(move |shared, batch| {
        for (i, t) in todo {
            spawn_job(shared, &pool, batch, move |b| format!("{}: transforming sample {i} of batch {}", b.uri(i as u32), b.seq), move |shared, _| {
                // SAFETY: `out` is the batch's lease, kept until `finish`, which runs after this
                // job; every copy and fill job has ended, and sample i is this job's alone.
                let bytes = unsafe { out.sample(i) }.ok_or_else(|| err!(Internal, "internal: sample {i} is outside the batch buffer"))?;
                SCRATCH.with_borrow_mut(|scratch| assemble::apply_transform(bytes, &shared.cfg.sample_shape, shared.cfg.dtype, &t, scratch))
            });
        }
    }));
}

/// The batch's transforms, one per sample (identity where a sample has none); empty when no
/// sample of the batch has one.
pub(super) fn of_batch<'a>(transforms: impl Iterator<Item = Option<&'a SampleTransform>> + Clone) -> Vec<SampleTransform> {
    if transforms.clone().all(|t| t.is_none()) {
        return Vec::new();
    }
    transforms.map(|t| t.copied().unwrap_or_default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(shape: &[u64], device: &str) -> Config {
        Config { sample_shape: shape.to_vec(), device: device.to_string(), ..Config::default() }
    }

    fn t(map: u64) -> SampleTransform {
        SampleTransform { map, scale: 1.0, ..SampleTransform::default() }
    }

    #[test]
    fn maps_are_checked_against_the_sample_shape() {
        let c = cfg(&[4, 8, 8], "cuda:0");
        // identity, flip of -1 (0x11: axis -1 backwards), turn of the (-2, -1) plane
        for map in [0, 0x11, 0x0102, 0x1102, 0x0112, 0x1011] {
            assert!(check(&c, "a", &t(map)).is_none(), "{map:#x}");
        }
        // -3 (extent 4) with -1 (extent 8); axis -4 of a 3-dim sample; a repeated source; bad bits
        for map in [0x01_00_03, 0x01_00_00_00, 0x0101, 0x21, 0x05] {
            let e = check(&c, "a", &t(map)).unwrap_or_else(|| panic!("{map:#x} accepted"));
            assert!(e.to_string().contains("transform map"), "{e}");
        }
        // every device: CPU-made batches are transformed by the workers
        assert!(check(&cfg(&[4, 8, 8], "cpu"), "a", &t(0x0112)).is_none());
    }

    #[test]
    fn intensity_needs_finite_values_and_a_float_output() {
        let c = cfg(&[2, 3], "cuda");
        let ok = SampleTransform { intensity: true, scale: 2.0, shift: -1.0, noise_factor: -0.5, noise_g: 1, ..SampleTransform::default() };
        assert!(check(&c, "a", &ok).is_none());
        for bad in [
            SampleTransform { scale: f32::NAN, ..ok },
            SampleTransform { shift: f32::INFINITY, ..ok },
            SampleTransform { noise_factor: 0.5, ..ok },
        ] {
            assert!(check(&c, "a", &bad).is_some(), "{bad:?}");
        }
        let labels = Config { dtype: super::super::OutDtype::U8, ..c.clone() };
        assert!(check(&labels, "a", &ok).unwrap().to_string().contains("floating-point"));
        assert!(check(&labels, "a", &SampleTransform { intensity: false, ..ok }).is_none());
    }

    #[test]
    fn a_batch_has_transforms_only_when_a_sample_does() {
        let a = t(0x11);
        assert!(of_batch([None, None].into_iter()).is_empty());
        assert_eq!(of_batch([None, Some(&a)].into_iter()), vec![SampleTransform::default(), a]);
    }
}
