//! OME-NGFF multiscales: the levels of a multiscale image group, from the group's
//! attributes (v0.4: `.zattrs` `multiscales`; v0.5: `zarr.json` `attributes.ome.multiscales`).
//! Bytes or JSON in, values out; the caller (`prefetch::load`) reads the documents and opens
//! the level it selects.
//!
//! Only the first multiscale of a group is read (the spec allows several; writers emit one).
//! A level's `scale` and `translation` are its dataset's `coordinateTransformations`,
//! composed with the multiscale-wide ones when present (scale multiplies, translation adds
//! after scaling), as the spec orders them.

use serde_json::Value;

use crate::error::{err, Result};

/// Most levels a multiscale may list.
pub(crate) const MAX_LEVELS: usize = 64;

/// One resolution level of a multiscale image.
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    /// The level's array, relative to the group (`"0"`, `"s1"`, `"scale2/image"`).
    pub path: String,
    /// Physical size of one voxel per axis, when given.
    pub scale: Option<Vec<f64>>,
    /// Physical offset of voxel 0 per axis, when given.
    pub translation: Option<Vec<f64>>,
}

/// The first multiscale of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Multiscale {
    /// OME-NGFF version (`"0.4"`, `"0.5"`), when given.
    pub version: Option<String>,
    /// `name`, when given.
    pub name: Option<String>,
    /// Axis names, when given.
    pub axes: Vec<String>,
    /// Levels, highest resolution first (the spec's order).
    pub levels: Vec<Level>,
}

/// The attributes of a group document: `Some` when `bytes` is a group (v3 `zarr.json` with
/// `"node_type": "group"`; v2 `.zattrs`, any JSON object), `None` when it is an array.
///
/// # Errors
/// InvalidArgument for malformed JSON or a `node_type` other than array or group.
pub(crate) fn group_attributes_v3(bytes: &[u8]) -> Result<Option<Value>> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| err!(InvalidArgument, "malformed zarr.json: {e}"))?;
    match v.get("node_type").and_then(Value::as_str) {
        Some("group") => Ok(Some(v.get("attributes").cloned().unwrap_or_else(|| Value::Object(serde_json::Map::new())))),
        Some("array") | None => Ok(None),
        Some(other) => Err(err!(InvalidArgument, "malformed zarr.json: node_type {other:?} (expected \"array\" or \"group\")")),
    }
}

/// The attributes in a v2 `.zattrs`.
///
/// # Errors
/// InvalidArgument when it is not a JSON object.
pub(crate) fn group_attributes_v2(bytes: &[u8]) -> Result<Value> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| err!(InvalidArgument, "malformed .zattrs: {e}"))?;
    if !v.is_object() {
        return Err(err!(InvalidArgument, "malformed .zattrs: expected a JSON object"));
    }
    Ok(v)
}

/// The names of the arrays a v3 group's consolidated metadata lists (direct children only),
/// when it has any.
pub(crate) fn consolidated_arrays(zarr_json: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_json::from_slice(zarr_json).ok()?;
    let nodes = v.get("consolidated_metadata")?.get("metadata")?.as_object()?;
    let mut names: Vec<String> =
        nodes.iter().filter(|(k, m)| !k.contains('/') && m.get("node_type").and_then(Value::as_str) == Some("array")).map(|(k, _)| k.clone()).collect();
    names.sort();
    Some(names)
}

fn floats(v: &Value) -> Option<Vec<f64>> {
    v.as_array()?.iter().map(Value::as_f64).collect()
}

/// (scale, translation), each when given.
type Transforms = (Option<Vec<f64>>, Option<Vec<f64>>);

/// The scale and translation of a `coordinateTransformations` list.
fn transforms(v: Option<&Value>, what: &str) -> Result<Transforms> {
    let Some(v) = v else { return Ok((None, None)) };
    let list = v.as_array().ok_or_else(|| err!(InvalidArgument, "malformed multiscales: {what} `coordinateTransformations` must be a list"))?;
    let (mut scale, mut translation) = (None, None);
    for t in list {
        match t.get("type").and_then(Value::as_str) {
            Some("scale") => scale = t.get("scale").and_then(floats),
            Some("translation") => translation = t.get("translation").and_then(floats),
            // `identity`, or a transformation given by `path`: nothing to report.
            _ => {}
        }
    }
    Ok((scale, translation))
}

fn valid_path(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && !p.contains(['\\', '#', '\0']) && p.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
}

/// The first multiscale in a group's attributes; `None` when it has none.
///
/// # Errors
/// InvalidArgument for a malformed `multiscales` (no datasets, a dataset without a valid
/// relative `path`, more than [`MAX_LEVELS`] levels).
pub(crate) fn multiscale(attrs: &Value) -> Result<Option<Multiscale>> {
    let ome = attrs.get("ome");
    let (list, version) = match (ome.and_then(|o| o.get("multiscales")), attrs.get("multiscales")) {
        (Some(l), _) => (l, ome.and_then(|o| o.get("version")).and_then(Value::as_str)),
        (None, Some(l)) => (l, None),
        (None, None) => return Ok(None),
    };
    let first = list.as_array().and_then(|l| l.first()).ok_or_else(|| err!(InvalidArgument, "malformed multiscales: expected a non-empty list"))?;
    let version = version.or_else(|| first.get("version").and_then(Value::as_str)).map(str::to_string);
    let datasets = first.get("datasets").and_then(Value::as_array).filter(|d| !d.is_empty()).ok_or_else(|| err!(InvalidArgument, "malformed multiscales: no `datasets`"))?;
    if datasets.len() > MAX_LEVELS {
        return Err(err!(InvalidArgument, "multiscales lists {} levels, more than the {MAX_LEVELS} damacy reads", datasets.len()));
    }
    let (global_scale, global_translation) = transforms(first.get("coordinateTransformations"), "multiscale")?;
    let mut levels = Vec::with_capacity(datasets.len());
    for (i, d) in datasets.iter().enumerate() {
        let path = d.get("path").and_then(Value::as_str).filter(|p| valid_path(p)).ok_or_else(|| {
            err!(InvalidArgument, "malformed multiscales: dataset {i} needs a relative `path` (no `..`, `#` or leading `/`), found {}", d.get("path").unwrap_or(&Value::Null))
        })?;
        let (mut scale, mut translation) = transforms(d.get("coordinateTransformations"), "dataset")?;
        if let Some(g) = &global_scale {
            scale = Some(match scale {
                Some(s) if s.len() == g.len() => s.iter().zip(g).map(|(a, b)| a * b).collect(),
                Some(s) => s,
                None => g.clone(),
            });
            if let Some(t) = &mut translation {
                if t.len() == g.len() {
                    t.iter_mut().zip(g).for_each(|(a, b)| *a *= b);
                }
            }
        }
        if let Some(g) = &global_translation {
            translation = Some(match translation {
                Some(t) if t.len() == g.len() => t.iter().zip(g).map(|(a, b)| a + b).collect(),
                Some(t) => t,
                None => g.clone(),
            });
        }
        levels.push(Level { path: path.to_string(), scale, translation });
    }
    let axes = first
        .get("axes")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.get("name").and_then(Value::as_str).or_else(|| x.as_str()).unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    Ok(Some(Multiscale { version, name: first.get("name").and_then(Value::as_str).map(str::to_string), axes, levels }))
}

impl Multiscale {
    /// `0 = "0", 1 = "1"` (for messages).
    pub fn describe_levels(&self) -> String {
        self.levels.iter().enumerate().map(|(i, l)| format!("{i} = {:?}", l.path)).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;
    use serde_json::json;

    fn datasets() -> Value {
        json!([
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]},
            {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}, {"type": "translation", "translation": [0.0, 0.25, 0.25]}]}
        ])
    }

    #[test]
    fn reads_v04_and_v05_layouts() {
        let axes = json!([{"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]);
        let v04 = json!({"multiscales": [{"version": "0.4", "name": "img", "axes": axes, "datasets": datasets()}]});
        let v05 = json!({"ome": {"version": "0.5", "multiscales": [{"name": "img", "axes": axes, "datasets": datasets()}]}});
        for (attrs, version) in [(v04, "0.4"), (v05, "0.5")] {
            let m = multiscale(&attrs).unwrap().unwrap();
            assert_eq!(m.version.as_deref(), Some(version));
            assert_eq!(m.name.as_deref(), Some("img"));
            assert_eq!(m.axes, ["z", "y", "x"]);
            assert_eq!(m.levels.len(), 2);
            assert_eq!(m.levels[0], Level { path: "0".into(), scale: Some(vec![1.0, 0.5, 0.5]), translation: None });
            assert_eq!(m.levels[1].translation, Some(vec![0.0, 0.25, 0.25]));
            assert_eq!(m.describe_levels(), r#"0 = "0", 1 = "1""#);
        }
        assert_eq!(multiscale(&json!({"other": 1})).unwrap(), None);
        // Multiscale-wide transformations compose with each level's.
        let g = json!({"multiscales": [{"datasets": datasets(), "coordinateTransformations": [{"type": "scale", "scale": [2.0, 2.0, 2.0]}]}]});
        let m = multiscale(&g).unwrap().unwrap();
        assert_eq!(m.levels[0].scale, Some(vec![2.0, 1.0, 1.0]));
        assert_eq!(m.levels[1].translation, Some(vec![0.0, 0.5, 0.5]));
    }

    #[test]
    fn rejects_malformed_multiscales() {
        for (attrs, what) in [
            (json!({"multiscales": []}), "non-empty"),
            (json!({"multiscales": [{"datasets": []}]}), "datasets"),
            (json!({"multiscales": [{"datasets": [{"path": "../x"}]}]}), "dataset 0"),
            (json!({"multiscales": [{"datasets": [{"path": "/abs"}]}]}), "dataset 0"),
            (json!({"multiscales": [{"datasets": [{"path": "a#b"}]}]}), "dataset 0"),
            (json!({"multiscales": [{"datasets": [{}]}]}), "dataset 0"),
            (json!({"multiscales": [{"datasets": vec![json!({"path": "0"}); MAX_LEVELS + 1]}]}), "levels"),
        ] {
            let e = multiscale(&attrs).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument);
            assert!(e.message().contains(what), "{attrs}: {e}");
        }
    }

    #[test]
    fn group_documents() {
        assert_eq!(group_attributes_v3(br#"{"zarr_format":3,"node_type":"group"}"#).unwrap(), Some(json!({})));
        assert_eq!(group_attributes_v3(br#"{"zarr_format":3,"node_type":"array"}"#).unwrap(), None);
        assert!(group_attributes_v3(br#"{"zarr_format":3,"node_type":"blob"}"#).is_err());
        assert!(group_attributes_v2(b"[1]").is_err());
        let cons = br#"{"zarr_format":3,"node_type":"group","consolidated_metadata":{"kind":"inline","metadata":{"b":{"node_type":"array"},"a":{"node_type":"array"},"g":{"node_type":"group"},"g/c":{"node_type":"array"}}}}"#;
        assert_eq!(consolidated_arrays(cons), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(consolidated_arrays(br#"{"node_type":"group"}"#), None);
    }
}
