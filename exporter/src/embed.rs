//! Self-contained ONNX bytes for the `.frt` `ONNX` section (`flowrt export --embed-onnx`).
//!
//! `torch.onnx.export(dynamo=True)` keeps the weights in a side file (`model.onnx.data`); an
//! embedded copy must not depend on it. [`self_contained_onnx`] decodes the `ModelProto`
//! (tract-onnx's prost types), reads every externally stored tensor (`external_data`:
//! `location`, `offset`, `length`) into `raw_data`, clears `external_data` and
//! `data_location`, and re-encodes. A half-precision model is stored widened to float32
//! ([`crate::half::widen_model`]): the graph flowrt imported, with the float32 signature the
//! `.frt` declares, so ONNX Runtime computes what the CPU path computes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use prost::Message;
use tract_onnx::pb::{GraphProto, ModelProto, TensorProto};

/// ONNX `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// Reads `path` and returns ONNX bytes with every external initializer inlined and every
/// float16 / bfloat16 tensor, type and `Cast` target widened to float32 (the input bytes
/// re-encoded unchanged in meaning when nothing was external or half precision).
///
/// Errors: unreadable / undecodable ONNX, a missing or too short external data file, an
/// external location that is absolute or leaves the model's folder, or malformed half data.
pub fn self_contained_onnx(path: &Path) -> Result<Vec<u8>> {
    let bytes = crate::read_onnx(path)?;
    let mut model = ModelProto::decode(&bytes[..])
        .with_context(|| format!("{} is not an ONNX ModelProto", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files = HashMap::new();
    crate::half::widen_model(&mut model, dir)?;
    if let Some(g) = model.graph.as_mut() {
        inline_graph(g, dir, &mut files)?;
    }
    Ok(model.encode_to_vec())
}

pub(crate) fn inline_graph(
    g: &mut GraphProto,
    dir: &Path,
    files: &mut HashMap<PathBuf, Vec<u8>>,
) -> Result<()> {
    for t in &mut g.initializer {
        inline_tensor(t, dir, files)?;
    }
    for s in &mut g.sparse_initializer {
        if let Some(v) = s.values.as_mut() {
            inline_tensor(v, dir, files)?;
        }
        if let Some(i) = s.indices.as_mut() {
            inline_tensor(i, dir, files)?;
        }
    }
    for node in &mut g.node {
        for a in &mut node.attribute {
            if let Some(t) = a.t.as_mut() {
                inline_tensor(t, dir, files)?;
            }
            for t in &mut a.tensors {
                inline_tensor(t, dir, files)?;
            }
            if let Some(sub) = a.g.as_mut() {
                inline_graph(sub, dir, files)?;
            }
            for sub in &mut a.graphs {
                inline_graph(sub, dir, files)?;
            }
        }
    }
    Ok(())
}

/// Reads an externally stored tensor's data (`files` caches the files read) into `raw_data`;
/// a tensor stored inline is left as it is.
pub(crate) fn inline_tensor(
    t: &mut TensorProto,
    dir: &Path,
    files: &mut HashMap<PathBuf, Vec<u8>>,
) -> Result<()> {
    if t.data_location != Some(EXTERNAL) && t.external_data.is_empty() {
        return Ok(());
    }
    let mut location = None;
    let mut offset = 0usize;
    let mut length = None;
    for kv in &t.external_data {
        match kv.key.as_str() {
            "location" => location = Some(kv.value.clone()),
            "offset" => offset = kv.value.parse().with_context(|| bad(t, "offset"))?,
            "length" => {
                length = Some(
                    kv.value
                        .parse::<usize>()
                        .with_context(|| bad(t, "length"))?,
                )
            }
            _ => {}
        }
    }
    let Some(location) = location else {
        bail!("tensor `{}`: external data without a location", t.name);
    };
    let file = dir.join(&location);
    if !files.contains_key(&file) {
        let read: u64 = files.values().map(|d| d.len() as u64).sum();
        let (_, data) = crate::external::read_confined(dir, &location, read)
            .with_context(|| format!("tensor `{}`", t.name))?;
        files.insert(file.clone(), data);
    }
    let data = files.get(&file).map(Vec::as_slice).unwrap_or_default();
    let end = match length {
        Some(l) => offset.checked_add(l),
        None => Some(data.len()),
    };
    let Some(chunk) = end.and_then(|e| data.get(offset..e)) else {
        bail!(
            "tensor `{}`: external data {}[{offset}..{:?}] is out of range ({} bytes)",
            t.name,
            file.display(),
            end,
            data.len()
        );
    };
    t.raw_data = chunk.to_vec();
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

fn bad(t: &TensorProto, key: &str) -> String {
    format!(
        "tensor `{}`: external data `{key}` is not an integer",
        t.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::StringStringEntryProto;

    fn kv(k: &str, v: &str) -> StringStringEntryProto {
        StringStringEntryProto {
            key: k.into(),
            value: v.into(),
        }
    }

    fn model_with(ext: Vec<StringStringEntryProto>) -> ModelProto {
        let t = TensorProto {
            name: "w".into(),
            data_location: Some(EXTERNAL),
            external_data: ext,
            ..Default::default()
        };
        ModelProto {
            graph: Some(GraphProto {
                initializer: vec![t],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn write_model(dir: &Path, m: &ModelProto) -> PathBuf {
        let p = dir.join("m.onnx");
        std::fs::write(&p, m.encode_to_vec()).unwrap();
        p
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flowrt-embed-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn inlines_external_data_with_offset_and_length() {
        let d = tmp("ok");
        std::fs::write(d.join("m.onnx.data"), b"0123456789abcdef").unwrap();
        let m = model_with(vec![
            kv("location", "m.onnx.data"),
            kv("offset", "4"),
            kv("length", "6"),
        ]);
        let out = self_contained_onnx(&write_model(&d, &m)).unwrap();
        let back = ModelProto::decode(&out[..]).unwrap();
        let t = &back.graph.unwrap().initializer[0];
        assert_eq!(t.raw_data, b"456789");
        assert!(t.external_data.is_empty());
        assert_eq!(t.data_location, None);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn rejects_escaping_missing_and_out_of_range_data() {
        let d = tmp("bad");
        std::fs::write(d.join("m.onnx.data"), b"0123").unwrap();
        for (ext, want) in [
            (vec![kv("location", "../secret")], "relative path"),
            (vec![kv("location", "/etc/passwd")], "relative path"),
            (vec![kv("location", "nope.data")], "reading external data"),
            (
                vec![kv("location", "m.onnx.data"), kv("length", "9")],
                "out of range",
            ),
            (
                vec![kv("location", "m.onnx.data"), kv("offset", "x")],
                "not an integer",
            ),
            (vec![kv("offset", "0")], "without a location"),
        ] {
            let e = self_contained_onnx(&write_model(&d, &model_with(ext))).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{e:#}");
        }
        let junk = d.join("junk.onnx");
        std::fs::write(&junk, [0xFFu8; 9]).unwrap();
        assert!(self_contained_onnx(&junk).is_err());
        let _ = std::fs::remove_dir_all(d);
    }
}
