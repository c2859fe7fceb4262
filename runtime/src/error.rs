//! The runtime's one error type.

use core::fmt;

/// Everything that can go wrong when loading a `.frt` file or sampling from it.
///
/// Every variant names its cause; none of them is ever produced by a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with the `FLRT` magic.
    BadMagic,
    /// The file's format version is not one this runtime reads.
    UnsupportedVersion {
        /// Version found in the file.
        found: u16,
    },
    /// The file ends before a structure that the header or a table says is there.
    Truncated {
        /// Which structure was cut off.
        what: &'static str,
    },
    /// The checksum over the file does not match the stored one.
    ChecksumMismatch {
        /// Stored checksum.
        stored: u32,
        /// Checksum computed over the bytes.
        computed: u32,
    },
    /// A field holds a value that is out of range or inconsistent.
    Invalid {
        /// Which field / rule was violated.
        what: &'static str,
    },
    /// A byte buffer (model bytes or arena) does not start at a 4-byte aligned address.
    Misaligned,
    /// A buffer passed by the caller has the wrong length.
    ShapeMismatch {
        /// Which buffer.
        what: &'static str,
        /// Elements (or bytes) expected.
        expected: usize,
        /// Elements (or bytes) given.
        found: usize,
    },
    /// The arena is smaller than the model needs for this batch size.
    ArenaTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// An input (noise, time, conditioning) contains NaN or infinity.
    NonFiniteInput {
        /// Which input.
        what: &'static str,
    },
    /// The solver's result contains NaN or infinity although its input was finite (the
    /// integration diverged, or the velocity field produced non-finite values).
    NonFiniteOutput {
        /// Which output.
        what: &'static str,
    },
    /// A solver parameter is not usable (zero steps, unknown method, ...).
    BadSolverConfig {
        /// What is wrong.
        what: &'static str,
    },
    /// The model lacks an input role this operation needs.
    MissingRole {
        /// The role that is missing.
        role: &'static str,
    },
    /// A node of the graph breaks a rule (arity, attribute range, shape consistency, order).
    /// `node` is the node's index in execution order (`ModelDesc::nodes` for the writer).
    InvalidNode {
        /// Index of the offending node.
        node: u32,
        /// Which rule was violated.
        what: &'static str,
    },
    /// A tensor of the graph breaks a rule (shape, kind, data size, memory slot).
    /// `tensor` is the tensor's index (`ModelDesc::tensors` for the writer).
    InvalidTensor {
        /// Index of the offending tensor.
        tensor: u32,
        /// Which rule was violated.
        what: &'static str,
    },
    /// The file contains a section marked *required* whose kind this runtime does not know.
    UnsupportedSection {
        /// The section kind found.
        kind: u16,
    },
    /// An argument passed by the caller is not usable (e.g. batch size 0).
    BadArgument {
        /// What is wrong.
        what: &'static str,
    },
    /// A constant is stored in a weight type this runtime was built without (cargo features
    /// `weights-f16` for f16 / bf16, `weights-int8` for int8).
    UnsupportedWeightType {
        /// Index of the constant.
        tensor: u32,
        /// The type's name (`f16`, `bf16`, `int8`).
        dtype: &'static str,
    },
    /// The model needs an op kernel, weight type or solver this build does not link: a
    /// firmware built with a [`crate::select::Selection`] for another model.
    NotLinked {
        /// What is missing (an op name such as `Conv`, a method name, `f16 weights`).
        what: &'static str,
    },
    /// A velocity-field backend outside the runtime (ONNX Runtime, a GPU) failed; the
    /// backend keeps its own detailed message (e.g. `flowrt_ort::OrtField::take_error`).
    Backend {
        /// What failed.
        what: &'static str,
    },
}

/// `Ok` when a buffer has the length expected of it, else [`Error::ShapeMismatch`] naming
/// `what` with both lengths.
pub fn expect_len(what: &'static str, expected: usize, found: usize) -> Result<(), Error> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected,
            found,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMagic => write!(f, "not a .frt file (magic bytes are not FLRT)"),
            Error::UnsupportedVersion { found } => {
                write!(
                    f,
                    "unsupported .frt format version {found} (this runtime reads versions 1 and 2)"
                )
            }
            Error::Truncated { what } => {
                write!(f, "truncated .frt file: {what} extends past the end")
            }
            Error::ChecksumMismatch { stored, computed } => write!(
                f,
                "corrupt .frt file: checksum {computed:#010x} does not match stored {stored:#010x}"
            ),
            Error::Invalid { what } => write!(f, "invalid .frt file: {what}"),
            Error::Misaligned => write!(
                f,
                "buffer is not aligned: model bytes and arena must start at a 4-byte aligned \
                 address (16 recommended; see flowrt::format::AlignedBytes / include_frt!)"
            ),
            Error::ShapeMismatch {
                what,
                expected,
                found,
            } => {
                write!(f, "wrong size for {what}: expected {expected}, got {found}")
            }
            Error::ArenaTooSmall { needed, given } => {
                write!(f, "arena too small: need {needed} bytes, got {given}")
            }
            Error::NonFiniteInput { what } => write!(f, "{what} contains NaN or infinity"),
            Error::NonFiniteOutput { what } => {
                write!(
                    f,
                    "{what} contains NaN or infinity (the integration diverged)"
                )
            }
            Error::BadSolverConfig { what } => write!(f, "bad solver configuration: {what}"),
            Error::MissingRole { role } => write!(f, "model has no input with role `{role}`"),
            Error::InvalidNode { node, what } => write!(f, "invalid node #{node}: {what}"),
            Error::InvalidTensor { tensor, what } => write!(f, "invalid tensor #{tensor}: {what}"),
            Error::UnsupportedSection { kind } => {
                write!(
                    f,
                    "unsupported required section kind {kind} (file needs a newer runtime)"
                )
            }
            Error::BadArgument { what } => write!(f, "bad argument: {what}"),
            Error::Backend { what } => write!(f, "backend error: {what}"),
            Error::NotLinked { what } => write!(
                f,
                "{what} is not linked into this build (its flowrt::select::Selection was made \
                 for another model or method: rebuild the firmware for this one)"
            ),
            Error::UnsupportedWeightType { tensor, dtype } => write!(
                f,
                "tensor #{tensor} stores {dtype} weights, which this runtime was built without \
                 (cargo feature weights-{})",
                if *dtype == "int8" { "int8" } else { "f16" }
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
