//! Writes synthetic example volumes (demo and benchmarks): `uint16` Zarr v3 arrays that look
//! like a fluorescence microscopy stack, so that compression ratios and decode costs are
//! realistic (random noise would not compress; a constant would compress too well).
//!
//! Image model, per voxel (the last three axes are z, y, x; any leading axes index independent
//! stacks; rank 1 and 2 arrays are the x and y-x slices of it):
//! - background: `100` plus a slow sinusoid along each spatial axis (amplitude 30, period 160 to
//!   400 voxels);
//! - spots: about one gaussian blob per 16³ cell (σ 1.5 to 4.5 voxels, 0.8σ along z, peak 400 to
//!   2800), placed by a hash of (seed, stack, cell);
//! - noise: triangular, about ±(4 + ½√signal), from a hash of (seed, voxel index).
//!
//! Every voxel value depends only on (seed, array shape, voxel index), never on the chunking, so
//! two layouts of the same seed hold the same values. Voxels of edge chunks outside the array
//! are written as the fill value 0.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use zarrs::array::{Array, ArrayMetadata, ArrayMetadataV3, CodecOptions};
use zarrs::filesystem::FilesystemStore;

use crate::error::{err, Error, Result};

/// Spots are placed one candidate per cube of this many voxels a side.
const CELL: u64 = 16;
/// A spot reaches at most this far from its centre (3σ of the widest spot, rounded up).
const REACH: u64 = 14;
/// Background level under the slow per-axis modulation.
const BASELINE: f32 = 100.0;
/// Peak-to-peak amplitude of the background wave along each spatial axis.
const WAVE: f32 = 30.0;
/// Largest shard (or unsharded chunk) accepted; each writer thread holds one in memory.
const MAX_UNIT_BYTES: u64 = 1 << 30;

/// Writes a `uint16` Zarr v3 array at directory `path` (replacing a Zarr array or group
/// already there) holding a synthetic microscopy stack of `shape`, deterministic in `seed`.
///
/// `codec` is `"zstd"` (level 3) or `"blosc-zstd"` (blosc, cname zstd, clevel 3, byte shuffle,
/// typesize 2, blosc's automatic block size); `"blosc-zstd:N"` forces blocks of N bytes
/// (several blocks per chunk, which crops can decode in part). With an empty `shard_shape` the array is unsharded with chunks of
/// `chunk_shape`; otherwise it is stored in shards of `shard_shape` (a multiple of
/// `chunk_shape` along every axis) through `sharding_indexed` with inner chunks of
/// `chunk_shape` and the index at the end (`bytes` little endian + `crc32c`). Shards are
/// generated and written in parallel, one per thread.
///
/// # Errors
/// - [`Status::InvalidArgument`](crate::Status::InvalidArgument): unknown `codec`; ranks
///   differ; a zero chunk or shard extent; a shard that is not a multiple of the chunk; a
///   shard (or unsharded chunk) over 1 GiB; over 2^64 elements; `path` is a file or a non-empty directory without
///   a `zarr.json`.
/// - [`Status::Storage`](crate::Status::Storage): removing, creating or writing files failed.
pub fn write_example_volume(
    path: &str,
    shape: &[u64],
    chunk_shape: &[u64],
    shard_shape: &[u64],
    codec: &str,
    seed: u64,
) -> Result<()> {
    let unit_shape = validate_geometry(shape, chunk_shape, shard_shape)?;
    let metadata = array_metadata(shape, chunk_shape, shard_shape, codec, seed)?;
    let metadata: ArrayMetadataV3 = serde_json::from_value(metadata)
        .map_err(|e| err!(InvalidArgument, "example array metadata is invalid: {e}"))?;

    clear_directory(Path::new(path))?;
    let store =
        FilesystemStore::new(path).map_err(|e| err!(Storage, "cannot open `{path}`: {e}"))?;
    let array = Array::new_with_metadata(Arc::new(store), "/", ArrayMetadata::V3(metadata))
        .map_err(|e| err!(InvalidArgument, "example array metadata is invalid: {e}"))?;
    array.store_metadata().map_err(|e| err!(Storage, "writing `{path}/zarr.json`: {e}"))?;

    let grid: Vec<u64> = shape.iter().zip(&unit_shape).map(|(&n, &u)| n.div_ceil(u)).collect();
    let n_units = usize::try_from(grid.iter().product::<u64>())
        .map_err(|_| err!(InvalidArgument, "array shape {shape:?} has too many chunks"))?;
    if n_units == 0 {
        return Ok(());
    }
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let n_threads = cores.min(n_units);
    // Few shards: let zarrs encode a shard's inner chunks in parallel instead.
    let options = CodecOptions::default().with_concurrent_target((cores / n_threads).max(1));
    let stack = SyntheticStack::new(shape, seed);

    // Work queue: the next unit (shard or chunk) index; a failure stops every thread.
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..n_threads {
            s.spawn(|| loop {
                let unit = next.fetch_add(1, Ordering::Relaxed);
                if unit >= n_units || failed.load(Ordering::Relaxed) {
                    break;
                }
                let indices = unravel(unit as u64, &grid);
                let start: Vec<u64> =
                    indices.iter().zip(&unit_shape).map(|(&i, &u)| i * u).collect();
                let values = stack.render(&start, &unit_shape);
                if let Err(e) = array.store_chunk_opt(&indices, values, &options) {
                    failed.store(true, Ordering::Relaxed);
                    let e = err!(Storage, "writing chunk {indices:?} of `{path}`: {e}");
                    if let Ok(mut slot) = first_error.lock() {
                        slot.get_or_insert(e);
                    }
                    break;
                }
            });
        }
    });
    // A panicking writer re-panics out of `scope` (the bridge's guard reports it), so the
    // lock cannot be poisoned here.
    first_error.into_inner().ok().flatten().map_or(Ok(()), Err)
}

/// Checks ranks and extents; returns the shape of one stored unit (the shard, or the chunk if
/// unsharded).
fn validate_geometry(shape: &[u64], chunk_shape: &[u64], shard_shape: &[u64]) -> Result<Vec<u64>> {
    if shape.is_empty() {
        return Err(err!(InvalidArgument, "example volume shape is empty"));
    }
    if chunk_shape.len() != shape.len() {
        return Err(err!(
            InvalidArgument,
            "chunk shape {chunk_shape:?} has a different rank than shape {shape:?}"
        ));
    }
    if chunk_shape.contains(&0) {
        return Err(err!(InvalidArgument, "chunk shape {chunk_shape:?} has a zero extent"));
    }
    if shape.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n)).is_none() {
        return Err(err!(InvalidArgument, "shape {shape:?} has more than 2^64 elements"));
    }
    let unit_shape = if shard_shape.is_empty() {
        chunk_shape
    } else {
        if shard_shape.len() != shape.len() {
            return Err(err!(
                InvalidArgument,
                "shard shape {shard_shape:?} has a different rank than shape {shape:?}"
            ));
        }
        if shard_shape.iter().zip(chunk_shape).any(|(&s, &c)| s == 0 || s % c != 0) {
            return Err(err!(
                InvalidArgument,
                "shard shape {shard_shape:?} is not a non-zero multiple of chunk shape {chunk_shape:?}"
            ));
        }
        shard_shape
    };
    let unit_bytes = unit_shape.iter().try_fold(2u64, |acc, &n| acc.checked_mul(n));
    if unit_bytes.is_none_or(|b| b > MAX_UNIT_BYTES) {
        return Err(err!(
            InvalidArgument,
            "a shard (or unsharded chunk) of {unit_shape:?} uint16 exceeds 1 GiB; lower `shard_shape`"
        ));
    }
    Ok(unit_shape.to_vec())
}

/// The `zarr.json` of the example array.
fn array_metadata(
    shape: &[u64],
    chunk_shape: &[u64],
    shard_shape: &[u64],
    codec: &str,
    seed: u64,
) -> Result<Value> {
    let blosc_zstd = |blocksize: u64| {
        json!({"name": "blosc", "configuration":
            {"cname": "zstd", "clevel": 3, "shuffle": "shuffle", "typesize": 2, "blocksize": blocksize}})
    };
    let compressor = match codec {
        "zstd" => json!({"name": "zstd", "configuration": {"level": 3, "checksum": false}}),
        "blosc-zstd" => blosc_zstd(0),
        _ => match codec.strip_prefix("blosc-zstd:").and_then(|b| b.parse::<u64>().ok()) {
            Some(b) if b >= 128 && b % 2 == 0 => blosc_zstd(b),
            _ => {
                return Err(err!(
                    InvalidArgument,
                    "unknown example codec `{codec}` (use `zstd`, `blosc-zstd` or `blosc-zstd:BLOCKSIZE` with an even BLOCKSIZE ≥ 128)"
                ))
            }
        },
    };
    let bytes = json!({"name": "bytes", "configuration": {"endian": "little"}});
    let (grid_shape, codecs) = if shard_shape.is_empty() {
        (chunk_shape, json!([bytes, compressor]))
    } else {
        let sharding = json!({"name": "sharding_indexed", "configuration": {
            "chunk_shape": chunk_shape,
            "codecs": [bytes, compressor],
            "index_codecs": [bytes, {"name": "crc32c"}],
            "index_location": "end",
        }});
        (shard_shape, json!([sharding]))
    };
    Ok(json!({
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": "uint16",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid_shape}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": codecs,
        "attributes": {"damacy": {"example_volume": {"seed": seed, "codec": codec}}},
    }))
}

/// Makes `path` an empty directory. Refuses to delete anything that is not a Zarr node (a
/// directory with a `zarr.json`), so a mistyped path cannot remove unrelated data.
fn clear_directory(path: &Path) -> Result<()> {
    let shown = path.display();
    if path.exists() {
        if !path.is_dir() {
            return Err(err!(InvalidArgument, "`{shown}` exists and is not a directory"));
        }
        let is_empty = std::fs::read_dir(path)
            .map_err(|e| err!(Storage, "cannot list `{shown}`: {e}"))?
            .next()
            .is_none();
        if !is_empty {
            if !path.join("zarr.json").is_file() {
                return Err(err!(
                    InvalidArgument,
                    "refusing to overwrite `{shown}`: a non-empty directory without zarr.json"
                ));
            }
            std::fs::remove_dir_all(path)
                .map_err(|e| err!(Storage, "cannot remove `{shown}`: {e}"))?;
        }
    }
    std::fs::create_dir_all(path).map_err(|e| err!(Storage, "cannot create `{shown}`: {e}"))
}

/// Row-major multi-index of `linear` in a grid of `grid` (every extent non-zero).
fn unravel(mut linear: u64, grid: &[u64]) -> Vec<u64> {
    let mut indices = vec![0; grid.len()];
    for (index, &extent) in indices.iter_mut().zip(grid).rev() {
        *index = linear % extent;
        linear /= extent;
    }
    indices
}

/// splitmix64's finaliser: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform value in [0, 1) from 24 bits of `h`.
fn unit_interval(h: u64) -> f32 {
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// The image model of one example array: its shape seen as `[stacks, z, y, x]`, and the
/// per-axis background waves.
struct SyntheticStack {
    seed: u64,
    /// Leading axes (all but the last three), each an independent stack.
    lead_shape: Vec<u64>,
    /// z, y, x extents; axes the array lacks (rank < 3) have extent 1 and are inactive.
    spatial: [u64; 3],
    active: [bool; 3],
    /// Background modulation along each spatial axis (added to [`BASELINE`]): period and
    /// phase of a sinusoid of amplitude [`WAVE`] (none on inactive axes).
    waves: [(f64, f64); 3],
}

/// One spot clipped to a block: its weights along z, y, x from the block-local offsets.
struct Spot {
    offset: [usize; 3],
    weights: [Vec<f32>; 3],
}

impl SyntheticStack {
    fn new(shape: &[u64], seed: u64) -> Self {
        let n_spatial = shape.len().min(3);
        let (lead, tail) = shape.split_at(shape.len() - n_spatial);
        let mut spatial = [1u64; 3];
        let mut active = [false; 3];
        for (k, &n) in tail.iter().enumerate() {
            spatial[3 - n_spatial + k] = n;
            active[3 - n_spatial + k] = true;
        }
        let waves = std::array::from_fn(|axis| {
            let h = mix(seed ^ 0xb0b0 ^ axis as u64);
            let period = 160.0 + 240.0 * f64::from(unit_interval(h));
            (period, std::f64::consts::TAU * f64::from(unit_interval(mix(h))))
        });
        Self { seed, lead_shape: lead.to_vec(), spatial, active, waves }
    }

    /// The values of the unit (shard or chunk) at `start` of `unit_shape`, C order; voxels
    /// outside the array are 0.
    fn render(&self, start: &[u64], unit_shape: &[u64]) -> Vec<u16> {
        let n_lead = self.lead_shape.len();
        let (lead_start, spatial_start) = start.split_at(n_lead);
        let (lead_unit, spatial_unit) = unit_shape.split_at(n_lead);
        let mut origin = [0u64; 3];
        let mut extent = [1usize; 3];
        for k in 0..spatial_unit.len() {
            origin[3 - spatial_unit.len() + k] = spatial_start[k];
            extent[3 - spatial_unit.len() + k] = spatial_unit[k] as usize;
        }
        let block_len: usize = extent.iter().product();
        let n_blocks: u64 = lead_unit.iter().product();
        let mut out = vec![0u16; block_len * n_blocks as usize];
        for (block, values) in out.chunks_exact_mut(block_len).enumerate() {
            let lead_index: Vec<u64> = unravel(block as u64, lead_unit)
                .iter()
                .zip(lead_start)
                .map(|(&i, &s)| i + s)
                .collect();
            if lead_index.iter().zip(&self.lead_shape).any(|(&i, &n)| i >= n) {
                continue;
            }
            let stack =
                lead_index.iter().zip(&self.lead_shape).fold(0, |acc, (&i, &n)| acc * n + i);
            self.render_block(values, stack, origin, extent);
        }
        out
    }

    /// Fills one spatial block (`extent` in z, y, x at `origin` of stack `stack`) of `values`.
    fn render_block(&self, values: &mut [u16], stack: u64, origin: [u64; 3], extent: [usize; 3]) {
        // The part of the block inside the array.
        let valid: [usize; 3] = std::array::from_fn(|a| {
            (self.spatial[a].saturating_sub(origin[a]) as usize).min(extent[a])
        });
        if valid.contains(&0) {
            return;
        }
        let spots = self.spots(stack, origin, valid);
        let [wave_z, wave_y, wave_x] = std::array::from_fn(|a| self.wave(a, origin[a], valid[a]));
        let [_, ny, nx] = valid;
        let [_, ey, ex] = extent;
        let mut plane = vec![0f32; ny * nx];
        let noise_seed = mix(self.seed ^ 0x0015_e5ee);
        for z in 0..valid[0] {
            plane.fill(0.0);
            for spot in &spots {
                let Some(&wz) = z.checked_sub(spot.offset[0]).and_then(|i| spot.weights[0].get(i))
                else {
                    continue;
                };
                for (dy, &wy) in spot.weights[1].iter().enumerate() {
                    let row = (spot.offset[1] + dy) * nx + spot.offset[2];
                    let w = wz * wy;
                    for (p, &wx) in
                        plane[row..row + spot.weights[2].len()].iter_mut().zip(&spot.weights[2])
                    {
                        *p += w * wx;
                    }
                }
            }
            let gz = origin[0] + z as u64;
            for y in 0..ny {
                let gy = origin[1] + y as u64;
                let bg = BASELINE + wave_z[z] + wave_y[y];
                let row_index = ((stack * self.spatial[0] + gz) * self.spatial[1] + gy)
                    * self.spatial[2]
                    + origin[2];
                let out_row = &mut values[(z * ey + y) * ex..][..nx];
                for (x, (o, &spot)) in
                    out_row.iter_mut().zip(&plane[y * nx..(y + 1) * nx]).enumerate()
                {
                    let signal = bg + wave_x[x] + spot;
                    let h = mix(noise_seed ^ (row_index + x as u64));
                    // Triangular in (-1, 1): the sum of two uniforms.
                    let tri = unit_interval(h) + unit_interval(h << 24) - 1.0;
                    let value = signal + tri * (4.0 + 0.5 * signal.sqrt());
                    *o = value.round().clamp(0.0, f32::from(u16::MAX)) as u16;
                }
            }
        }
    }

    /// The background wave along `axis` at coordinates `start..start + len`.
    fn wave(&self, axis: usize, start: u64, len: usize) -> Vec<f32> {
        if !self.active[axis] {
            return vec![0.0; len];
        }
        let (period, phase) = self.waves[axis];
        (start..start + len as u64)
            .map(|i| {
                // The coordinate modulo the period first, so that f64 keeps its precision.
                let angle = std::f64::consts::TAU * ((i as f64) % period) / period + phase;
                (f64::from(WAVE) * (0.5 + 0.5 * angle.sin())) as f32
            })
            .collect()
    }

    /// The spots that reach the block at `origin` of `valid` voxels, clipped to it.
    fn spots(&self, stack: u64, origin: [u64; 3], valid: [usize; 3]) -> Vec<Spot> {
        // Candidate cells per axis: those whose spots can reach the block.
        let cells: [(u64, u64); 3] = std::array::from_fn(|a| {
            if !self.active[a] {
                return (0, 0);
            }
            let lo = origin[a].saturating_sub(REACH) / CELL;
            let hi = (origin[a] + valid[a] as u64 - 1 + REACH).min(self.spatial[a] - 1) / CELL;
            (lo, hi)
        });
        let stack_seed = mix(self.seed ^ mix(stack ^ 0x5707));
        let mut spots = Vec::new();
        for cz in cells[0].0..=cells[0].1 {
            for cy in cells[1].0..=cells[1].1 {
                for cx in cells[2].0..=cells[2].1 {
                    let h = mix(stack_seed ^ mix(cz ^ mix(cy ^ mix(cx))));
                    if h & 0xff >= 110 {
                        continue; // about 43% of cells hold a spot
                    }
                    if let Some(spot) = self.spot(mix(h), [cz, cy, cx], origin, valid) {
                        spots.push(spot);
                    }
                }
            }
        }
        spots
    }

    /// The spot of cell `cell` drawn from hash `h`, clipped to the block; `None` if it misses.
    fn spot(&self, h: u64, cell: [u64; 3], origin: [u64; 3], valid: [usize; 3]) -> Option<Spot> {
        let sigma = 1.5 + 3.0 * unit_interval(mix(h ^ 1));
        let peak = 400.0 + 2400.0 * unit_interval(mix(h ^ 2)).powi(2);
        let mut offset = [0usize; 3];
        let mut weights: [Vec<f32>; 3] = Default::default();
        for a in 0..3 {
            if !self.active[a] {
                weights[a] = vec![1.0];
                continue;
            }
            let sigma_a = if a == 0 && self.active[1] { 0.8 * sigma } else { sigma };
            let centre =
                (cell[a] * CELL) as f32 + CELL as f32 * unit_interval(mix(h ^ (3 + a as u64)));
            let reach = (3.0 * sigma_a).ceil();
            let block_lo = origin[a] as f32;
            let block_hi = (origin[a] + valid[a] as u64 - 1) as f32;
            let lo = (centre - reach).ceil().max(block_lo);
            let hi = (centre + reach).floor().min(block_hi);
            if lo > hi {
                return None;
            }
            offset[a] = (lo - block_lo) as usize;
            let inv = -0.5 / (sigma_a * sigma_a);
            weights[a] = (0..=(hi - lo) as usize)
                .map(|i| {
                    let d = lo + i as f32 - centre;
                    (inv * d * d).exp()
                })
                .collect();
        }
        weights[0].iter_mut().for_each(|w| *w *= peak);
        Some(Spot { offset, weights })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use zarrs::array::ArraySubset;

    use super::*;
    use crate::Status;

    /// A fresh, empty scratch directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("damacy-example-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Every value of the array at `path`, read back by zarrs.
    fn read_all(path: &Path) -> (Vec<u64>, Vec<u16>) {
        let store = Arc::new(FilesystemStore::new(path).unwrap());
        let array = Array::open(store, "/").unwrap();
        let shape = array.shape().to_vec();
        let values: Vec<u16> =
            array.retrieve_array_subset(&ArraySubset::new_with_shape(shape.clone())).unwrap();
        (shape, values)
    }

    #[test]
    fn sharded_volume_reads_back_deterministic_and_structured() {
        // shape=[40,50,60], inner=[8,16,16], shard=[16,32,32]: 3×2×2 shards, edge shards partial.
        let shape = [40, 50, 60];
        let a = scratch("sharded-a");
        write_example_volume(a.to_str().unwrap(), &shape, &[8, 16, 16], &[16, 32, 32], "zstd", 7)
            .unwrap();
        let (got_shape, values) = read_all(&a);
        assert_eq!(got_shape, shape);
        assert_eq!(values.len(), 40 * 50 * 60);

        // Same seed, other codec and layout (unsharded): identical values.
        let b = scratch("sharded-b");
        write_example_volume(b.to_str().unwrap(), &shape, &[16, 16, 16], &[], "blosc-zstd", 7)
            .unwrap();
        assert!(read_all(&b).1 == values, "values depend on the layout");

        // Same as one in-memory render of the whole array.
        assert!(SyntheticStack::new(&shape, 7).render(&[0, 0, 0], &shape) == values);

        // Another seed: other values.
        write_example_volume(b.to_str().unwrap(), &shape, &[16, 16, 16], &[], "zstd", 8).unwrap();
        let other = read_all(&b).1;
        assert!(other.iter().zip(&values).filter(|(x, y)| x != y).count() > values.len() / 2);

        // Microscopy-like: a dim background with bright spots, not constant, not saturated.
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let max = sorted[sorted.len() - 1];
        assert!((70..300).contains(&median), "median {median}");
        assert!(max > 600 && max < 20_000, "max {max}");
        assert!(sorted[0] < median, "min {}", sorted[0]);
        let bright = values.iter().filter(|&&v| v > median + 200).count();
        assert!(bright > values.len() / 200 && bright < values.len() / 4, "bright voxels {bright}");

        // Smooth: neighbours along x differ far less than random pairs.
        let neighbour: f64 = values.windows(2).map(|w| f64::from(w[0].abs_diff(w[1]))).sum::<f64>()
            / values.len() as f64;
        let far: f64 = values
            .iter()
            .zip(values.iter().skip(values.len() / 3))
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / (values.len() * 2 / 3) as f64;
        assert!(neighbour < 0.8 * far, "neighbour {neighbour} far {far}");

        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }

    #[test]
    fn sharded_metadata_has_index_at_end_with_crc32c() {
        let dir = scratch("metadata");
        write_example_volume(
            dir.to_str().unwrap(),
            &[20, 20],
            &[5, 10],
            &[10, 20],
            "blosc-zstd",
            1,
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.join("zarr.json")).unwrap();
        let meta: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(meta["data_type"], "uint16");
        assert_eq!(meta["chunk_grid"]["configuration"]["chunk_shape"], json!([10, 20]));
        let sharding = &meta["codecs"][0];
        assert_eq!(sharding["name"], "sharding_indexed");
        let config = &sharding["configuration"];
        assert_eq!(config["chunk_shape"], json!([5, 10]));
        assert_eq!(config["index_location"], "end");
        assert_eq!(config["index_codecs"][1]["name"], "crc32c");
        assert_eq!(config["codecs"][1]["name"], "blosc");
        assert_eq!(config["codecs"][1]["configuration"]["typesize"], 2);
        assert_eq!(config["codecs"][1]["configuration"]["shuffle"], "shuffle");
        assert!(dir.join("c/1/0").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn other_ranks_are_written() {
        for (name, shape, chunk) in [
            ("rank1", vec![100u64], vec![32u64]),
            ("rank2", vec![30, 40], vec![16, 16]),
            ("rank4", vec![2, 10, 20, 30], vec![1, 8, 8, 8]),
        ] {
            let dir = scratch(name);
            write_example_volume(dir.to_str().unwrap(), &shape, &chunk, &[], "zstd", 3).unwrap();
            let (got_shape, values) = read_all(&dir);
            assert_eq!(got_shape, shape);
            assert!(values.iter().any(|&v| v != values[0]), "{name} is constant");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn rewriting_replaces_the_previous_array() {
        let dir = scratch("rewrite");
        let path = dir.to_str().unwrap();
        write_example_volume(path, &[32, 32], &[8, 8], &[], "zstd", 1).unwrap();
        assert!(dir.join("c/3/3").is_file());
        write_example_volume(path, &[16, 16], &[8, 8], &[16, 16], "zstd", 1).unwrap();
        assert!(!dir.join("c/3/3").exists());
        assert_eq!(read_all(&dir).0, [16, 16]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_to_overwrite_a_non_zarr_directory() {
        let dir = scratch("foreign");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("precious.txt"), b"keep me").unwrap();
        let e =
            write_example_volume(dir.to_str().unwrap(), &[8], &[4], &[], "zstd", 1).unwrap_err();
        assert_eq!(e.status(), Status::InvalidArgument);
        assert!(dir.join("precious.txt").is_file());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_arguments_are_rejected_before_writing() {
        type Case<'a> = (&'a [u64], &'a [u64], &'a [u64], &'a str);
        let dir = scratch("invalid");
        let path = dir.to_str().unwrap();
        let cases: [Case; 8] = [
            (&[8, 8], &[4, 4], &[], "gzip"),
            (&[8, 8], &[4], &[], "zstd"),
            (&[8, 8], &[4, 0], &[], "zstd"),
            (&[8, 8], &[4, 4], &[8], "zstd"),
            (&[8, 8], &[4, 4], &[6, 8], "zstd"),
            (&[], &[], &[], "zstd"),
            (&[1 << 20, 1 << 20], &[1 << 15, 1 << 15], &[], "zstd"),
            (&[u64::MAX, 4], &[1, 4], &[], "zstd"),
        ];
        for (shape, chunk, shard, codec) in cases {
            let e = write_example_volume(path, shape, chunk, shard, codec, 0).unwrap_err();
            assert_eq!(
                e.status(),
                Status::InvalidArgument,
                "{shape:?} {chunk:?} {shard:?} {codec}: {e}"
            );
        }
        assert!(!dir.exists());
    }

    /// `cargo test --release -p damacy --lib -- --ignored example_512`: the demo volume.
    #[test]
    #[ignore = "writes 256 MiB; run in release"]
    fn example_512_cubed_writes_in_well_under_a_minute() {
        let dir = scratch("512");
        for (shard, codec) in [(&[256u64, 256, 256][..], "zstd"), (&[][..], "blosc-zstd")] {
            let t = std::time::Instant::now();
            write_example_volume(
                dir.to_str().unwrap(),
                &[512, 512, 512],
                &[64, 64, 64],
                shard,
                codec,
                0,
            )
            .unwrap();
            let elapsed = t.elapsed();
            let stored: u64 = walk_size(&dir);
            eprintln!(
                "512³ shard {shard:?} {codec}: {elapsed:?}, {:.1} MiB stored",
                stored as f64 / 1_048_576.0
            );
            assert!(elapsed.as_secs() < 30);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn walk_size(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() {
                    walk_size(&e.path())
                } else {
                    e.metadata().unwrap().len()
                }
            })
            .sum()
    }
}
