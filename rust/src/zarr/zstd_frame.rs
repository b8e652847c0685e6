//! Host-side check of a zstd frame's structure (RFC 8878 §3.1.1): magic number, frame
//! header, and every block header up to the last block and the optional checksum, ending
//! exactly at the end of the buffer. The GPU path runs it before handing a chunk to nvCOMP,
//! which treats malformed input as undefined behaviour (a fault poisons the CUDA context).
//! It reads headers only (a few bytes per 128 KiB block), never the compressed payload.
//! nvCOMP does not verify a frame's content checksum either: [`check_frame`] returns it, and
//! the device path checks it against XXH64 of the decoded bytes on the GPU.

use crate::error::{err, Result};

const MAGIC: u32 = 0xFD2F_B528;
const MAX_BLOCK: u32 = 128 << 10;
/// Largest Window_Log libzstd decodes on 64-bit targets (`ZSTD_WINDOWLOG_MAX_64`).
const MAX_WINDOW_LOG: u32 = 31;

/// Checks that `frame` is exactly one well-formed zstd frame whose content size, when the
/// header states it, equals `decoded_len`. Returns the frame's Content_Checksum (the lower
/// 32 bits of XXH64, seed 0, of the decoded content: its last 4 bytes, little endian) when
/// the header's Content_Checksum_flag is set.
///
/// # Errors
/// Decode naming what is wrong (magic, reserved bit, content size, block type or size,
/// trailing or missing bytes).
pub fn check_frame(frame: &[u8], decoded_len: u64) -> Result<Option<u32>> {
    let byte = |at: usize| frame.get(at).copied().ok_or_else(|| err!(Decode, "zstd frame truncated at byte {at} of {}", frame.len()));
    let le = |at: usize, n: usize| -> Result<u64> {
        let b = frame.get(at..at + n).ok_or_else(|| err!(Decode, "zstd frame truncated at byte {at} of {}", frame.len()))?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    };
    let magic = le(0, 4)? as u32;
    if magic != MAGIC {
        return Err(err!(Decode, "not a zstd frame: magic number {magic:#010x}, expected {MAGIC:#010x}"));
    }
    let fhd = byte(4)?;
    if fhd & 0x08 != 0 {
        return Err(err!(Decode, "zstd frame header: reserved bit set"));
    }
    let single_segment = fhd & 0x20 != 0;
    let checksum = fhd & 0x04 != 0;
    let dict_bytes = [0usize, 1, 2, 4][usize::from(fhd & 0x03)];
    let fcs_bytes = match fhd >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    if !single_segment {
        // Window_Descriptor: libzstd (and so the CPU path) refuses windows over 2^31 bytes.
        let window_log = 10 + u32::from(byte(5)? >> 3);
        if window_log > MAX_WINDOW_LOG {
            return Err(err!(Decode, "zstd frame header: window of 2^{window_log} bytes exceeds 2^{MAX_WINDOW_LOG}"));
        }
    }
    let mut at = 5 + usize::from(!single_segment) + dict_bytes;
    if fcs_bytes > 0 {
        let mut fcs = le(at, fcs_bytes)?;
        if fcs_bytes == 2 {
            fcs += 256;
        }
        if fcs != decoded_len {
            return Err(err!(Decode, "zstd frame: content size {fcs}, expected {decoded_len}"));
        }
    }
    at += fcs_bytes;
    // Bytes the raw and RLE blocks decode to (exact: their headers say it). More than the
    // chunk holds is refused here: nvCOMP writes such a frame past its output buffer (seen on
    // an H200 as cudaErrorIllegalAddress for an RLE bomb without a declared content size).
    let mut exact: u64 = 0;
    loop {
        let header = le(at, 3)? as u32;
        at += 3;
        let last = header & 1 != 0;
        let size = header >> 3;
        let payload = match (header >> 1) & 3 {
            // Block_Maximum_Size bounds every block, an RLE block's repeat count included.
            0..=2 if size > MAX_BLOCK => return Err(err!(Decode, "zstd block of {size} bytes exceeds {MAX_BLOCK}")),
            0 | 2 => size as usize,
            1 => 1,
            _ => return Err(err!(Decode, "zstd block of reserved type 3 at byte {}", at - 3)),
        };
        if (header >> 1) & 3 <= 1 {
            exact += u64::from(size);
            if exact > decoded_len {
                return Err(err!(Decode, "zstd frame decodes to more than the chunk's {decoded_len} bytes (raw and RLE blocks alone reach {exact} at byte {})", at - 3));
            }
        }
        at = at.checked_add(payload).filter(|&e| e <= frame.len()).ok_or_else(|| err!(Decode, "zstd block runs past the {}-byte frame", frame.len()))?;
        if last {
            break;
        }
    }
    let content_checksum = if checksum {
        let c = le(at, 4)? as u32;
        at += 4;
        Some(c)
    } else {
        None
    };
    if at != frame.len() {
        return Err(err!(Decode, "zstd frame: {} bytes after parsing, chunk has {}", at, frame.len()));
    }
    Ok(content_checksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7) % 251 + (i / 1000) % 3) as u8).collect()
    }

    #[test]
    fn accepts_real_frames() {
        for n in [0usize, 1, 300, 70_000, 300_000] {
            for level in [1, 3, 19] {
                let d = data(n);
                let mut c = zstd::bulk::Compressor::new(level).unwrap();
                c.include_checksum(n % 2 == 0).unwrap();
                let f = c.compress(&d).unwrap();
                let sum = check_frame(&f, n as u64).unwrap_or_else(|e| panic!("n={n} level={level}: {e}"));
                // With the flag, the last 4 bytes; libzstd wrote XXH64's lower 32 bits there.
                let tail = u32::from_le_bytes(f[f.len() - 4..].try_into().unwrap());
                assert_eq!(sum, (n % 2 == 0).then_some(tail), "n={n} level={level}");
            }
        }
    }

    /// The checksum returned is the frame's, known independently: XXH64("abc", seed 0) is
    /// 0x44bc2cf5ad770999 (the xxHash reference), so a frame of "abc" ends in 0xad770999.
    #[test]
    fn returns_the_content_checksum_when_flagged() {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        c.include_checksum(true).unwrap();
        let f = c.compress(b"abc").unwrap();
        assert_eq!(check_frame(&f, 3).unwrap(), Some(0xad77_0999));
        assert!(check_frame(&f[..f.len() - 1], 3).is_err(), "checksum cut short");
        c.include_checksum(false).unwrap();
        assert_eq!(check_frame(&c.compress(b"abc").unwrap(), 3).unwrap(), None);
    }

    #[test]
    fn rejects_garbage_truncation_and_wrong_size() {
        let d = data(200_000);
        let f = zstd::bulk::compress(&d, 3).unwrap();
        assert!(check_frame(&f, 199_999).is_err(), "content size differs");
        assert!(check_frame(&f[..f.len() - 1], 200_000).is_err(), "truncated");
        let mut longer = f.clone();
        longer.push(0);
        assert!(check_frame(&longer, 200_000).is_err(), "trailing bytes");
        let mut x = 0x2545_F491u32;
        let garbage: Vec<u8> = (0..f.len()).map(|_| { x ^= x << 13; x ^= x >> 17; x ^= x << 5; x as u8 }).collect();
        assert!(check_frame(&garbage, 200_000).is_err());
        assert!(check_frame(&[], 0).is_err());
    }

    /// Found by the `zstd_frame` fuzz target: a frame libzstd refuses (window descriptor
    /// 0xec: a 2^39-byte window) passed the check, so the device path would have handed it
    /// to nvCOMP. And an RLE block repeating its byte more than 128 KiB times.
    #[test]
    fn rejects_oversized_windows_and_rle_blocks() {
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xec, 0x03, 0x1c, 0xb8, 0x1a];
        assert!(zstd::zstd_safe::find_frame_compressed_size(&frame).is_err(), "libzstd refuses it");
        let e = check_frame(&frame, 0).unwrap_err();
        assert!(e.message().contains("window"), "{e}");
        // Window 2^10: then the RLE block of 0x170380 repeats is what is wrong.
        let mut rle = frame;
        rle[5] = 0x00;
        assert!(check_frame(&rle, 0).unwrap_err().message().contains("exceeds"));
        // An RLE block of 16 repeats is fine, where the chunk holds 16 bytes or more.
        let header = (16u32 << 3) | (1 << 1) | 1;
        rle[6..9].copy_from_slice(&header.to_le_bytes()[..3]);
        assert!(check_frame(&rle, 15).unwrap_err().message().contains("more than the chunk"), "16 bytes into a 15-byte chunk");
        assert_eq!(check_frame(&rle, 16).unwrap(), None);
        assert_eq!(zstd::bulk::decompress(&rle, 16).unwrap(), [0x1a; 16]);
    }
}
