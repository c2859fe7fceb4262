//! Parsing and validating a multi-network file's `PIPELINE` section into its stage models
//! (sampling them is [`crate::pipeline`]'s job).

use crate::format::pipeline::{StageKind, MAX_STAGES, STAGE_RECORD_LEN};
use crate::format::{le_u16, le_u32, le_u64};
use crate::{Error, Model};

/// A validated multi-network model.
#[derive(Debug, Clone, Copy)]
pub struct Pipeline<'a> {
    main: Model<'a>,
    stages: [Option<(StageKind, Model<'a>)>; MAX_STAGES],
    count: usize,
}

const fn invalid(what: &'static str) -> Error {
    Error::Invalid { what }
}

/// Parses and validates a `PIPELINE` section against the main model.
///
/// Errors: [`Error::Invalid`] (table, kinds, parameters, nesting, mismatched dimensions or
/// conventions) or any error of the nested files.
pub(crate) fn parse<'a>(main: &Model<'a>, section: &'a [u8]) -> Result<Pipeline<'a>, Error> {
    const T: Error = Error::Truncated {
        what: "pipeline section",
    };
    let count = le_u32(section, 0).ok_or(T)? as usize;
    if count == 0 || count > MAX_STAGES {
        return Err(invalid("a pipeline has 1 to 8 stages"));
    }
    if le_u32(section, 4) != Some(0) {
        return Err(invalid("pipeline reserved field is not zero"));
    }
    let table_end = 8 + STAGE_RECORD_LEN * count;
    let mut p = Pipeline {
        main: *main,
        stages: [None; MAX_STAGES],
        count,
    };
    let mut decoders = 0;
    for i in 0..count {
        let o = 8 + STAGE_RECORD_LEN * i;
        let code = le_u16(section, o).ok_or(T)?;
        if le_u16(section, o + 2) != Some(0) || le_u32(section, o + 4) != Some(0) {
            return Err(invalid("pipeline stage reserved field is not zero"));
        }
        let a = le_u32(section, o + 8).map(f32::from_bits).ok_or(T)?;
        let b = le_u32(section, o + 12).map(f32::from_bits).ok_or(T)?;
        let off = usize::try_from(le_u64(section, o + 16).ok_or(T)?).map_err(|_| T)?;
        let len = usize::try_from(le_u64(section, o + 24).ok_or(T)?).map_err(|_| T)?;
        if off % 16 != 0 || off < table_end {
            return Err(invalid("pipeline stage file is misplaced"));
        }
        let body = off
            .checked_add(len)
            .and_then(|end| section.get(off..end))
            .ok_or(T)?;
        let kind = match code {
            0 => StageKind::Block { a, b },
            1 => StageKind::Refiner { from: a, to: b },
            2 => StageKind::Decoder,
            _ => return Err(invalid("unknown pipeline stage kind")),
        };
        if !(a.is_finite() && b.is_finite()) {
            return Err(invalid("pipeline stage interval is not finite"));
        }
        if let StageKind::Refiner { from, to } = kind {
            if !((0.0..=1.0).contains(&from) && from < to && to <= 1.0) {
                return Err(invalid(
                    "refiner step fractions must satisfy 0 <= from < to <= 1",
                ));
            }
        }
        let m = Model::from_bytes(body)?;
        if m.pipeline().is_some() {
            return Err(invalid("pipeline stages cannot be pipelines themselves"));
        }
        if m.state_dim() != main.state_dim() {
            return Err(invalid("a pipeline stage has another state dimension"));
        }
        if kind == StageKind::Decoder {
            decoders += 1;
            if m.input_count() != 1 {
                return Err(invalid("a decoder takes only the state `x`"));
            }
        } else if m.time_convention() != main.time_convention() {
            return Err(invalid(
                "a pipeline velocity stage has another time convention",
            ));
        } else if m.output_dim() != m.state_dim() {
            return Err(invalid(
                "a pipeline velocity stage does not output a velocity",
            ));
        }
        if let Some(slot) = p.stages.get_mut(i) {
            *slot = Some((kind, m));
        }
    }
    if decoders > 1 {
        return Err(invalid("a pipeline has at most one decoder"));
    }
    Ok(p)
}

impl<'a> Pipeline<'a> {
    /// The main velocity network (the file's own graph).
    pub fn main(&self) -> &Model<'a> {
        &self.main
    }

    /// The stages, in file order.
    pub fn stages(&self) -> impl Iterator<Item = (StageKind, &Model<'a>)> + '_ {
        self.stages
            .iter()
            .take(self.count)
            .filter_map(|s| s.as_ref().map(|(k, m)| (*k, m)))
    }

    /// The decoder, if any.
    pub fn decoder(&self) -> Option<&Model<'a>> {
        self.stages()
            .find(|(k, _)| *k == StageKind::Decoder)
            .map(|(_, m)| m)
    }

    /// The velocity network for step `n` of `steps`, starting at model time `t` (see the
    /// module docs for the rule).
    pub fn velocity_for_step(&self, n: usize, steps: usize, t: f32) -> &Model<'a> {
        let frac = n as f64 / steps.max(1) as f64;
        let refiner = self.stages().find(|(k, _)| match *k {
            StageKind::Refiner { from, to } => f64::from(from) <= frac && frac < f64::from(to),
            _ => false,
        });
        let block = || {
            self.stages().find(|(k, _)| match *k {
                StageKind::Block { a, b } => a.min(b) <= t && t <= a.max(b),
                _ => false,
            })
        };
        refiner.or_else(block).map_or(&self.main, |(_, m)| m)
    }

    /// Output elements per row of a sample: the decoder's output size, else the state's.
    pub fn output_dim(&self) -> usize {
        self.decoder()
            .map_or(self.main.state_dim(), Model::output_dim)
    }

    /// Graph + field arena for `batch` rows: the largest of all graphs.
    ///
    /// Errors: [`Error::BadArgument`] on overflow.
    pub fn required_arena_bytes(&self, batch: usize) -> Result<usize, Error> {
        let mut most = self.main.required_arena_bytes(batch)?;
        for (_, m) in self.stages() {
            most = most.max(m.required_arena_bytes(batch)?);
        }
        Ok(most)
    }
}
