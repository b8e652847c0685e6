//! The output element type of a batch (a config knob; the casts: the module doc of `assemble`).

use serde::{Deserialize, Serialize};

/// Output element type of a batch. Casts from each source type: `assemble`'s module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutDtype {
    /// IEEE f32.
    #[serde(rename = "f32", alias = "float32")]
    F32,
    /// bfloat16, rounded to nearest even from the f32 value.
    #[serde(rename = "bf16", alias = "bfloat16")]
    Bf16,
    /// u8 (label arrays): the source value converted with Rust's `as`.
    #[serde(rename = "u8", alias = "uint8")]
    U8,
    /// i32 (label arrays): the source value converted with Rust's `as`.
    #[serde(rename = "i32", alias = "int32")]
    I32,
    /// i64 (label arrays, e.g. class indices for a cross-entropy loss): Rust's `as`.
    #[serde(rename = "i64", alias = "int64")]
    I64,
}

impl OutDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            OutDtype::U8 => 1,
            OutDtype::Bf16 => 2,
            OutDtype::F32 | OutDtype::I32 => 4,
            OutDtype::I64 => 8,
        }
    }
    /// The config name ("f32", "bf16", "u8", "i32", "i64").
    pub fn name(self) -> &'static str {
        match self {
            OutDtype::F32 => "f32",
            OutDtype::Bf16 => "bf16",
            OutDtype::U8 => "u8",
            OutDtype::I32 => "i32",
            OutDtype::I64 => "i64",
        }
    }
    /// `true` for the floating-point outputs (the ones the GPU path assembles).
    pub fn is_float(self) -> bool {
        matches!(self, OutDtype::F32 | OutDtype::Bf16)
    }
}

impl From<OutDtype> for crate::ffi::records::OutDtype {
    fn from(d: OutDtype) -> Self {
        match d {
            OutDtype::F32 => Self::F32,
            OutDtype::Bf16 => Self::Bf16,
            OutDtype::U8 => Self::U8,
            OutDtype::I32 => Self::I32,
            OutDtype::I64 => Self::I64,
        }
    }
}
