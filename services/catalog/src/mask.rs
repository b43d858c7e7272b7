//! Update masks (`google.protobuf.FieldMask`): which fields an Update changes.

use slipway_api::Violations;

/// The validated paths of an Update's mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateMask {
    paths: Vec<String>,
}

impl UpdateMask {
    /// The mask of a request. An absent or empty mask means every mutable field (a full
    /// replace of what may change); a path outside `mutable` is a violation of
    /// `update_mask.paths[i]`, since silently ignoring it would lose the caller's change.
    pub fn parse(
        mask: Option<&prost_types::FieldMask>,
        mutable: &[&str],
        v: &mut Violations,
    ) -> Self {
        let paths = mask.map(|mask| mask.paths.as_slice()).unwrap_or_default();
        if paths.is_empty() {
            return Self {
                paths: mutable.iter().map(|path| (*path).to_owned()).collect(),
            };
        }
        let mut valid = Vec::with_capacity(paths.len());
        for (i, path) in paths.iter().enumerate() {
            if mutable.contains(&path.as_str()) {
                if !valid.contains(path) {
                    valid.push(path.clone());
                }
            } else {
                v.add(
                    format!("update_mask.paths[{i}]"),
                    format!(
                        "is not a field an update may change ({})",
                        mutable.join(", ")
                    ),
                );
            }
        }
        Self { paths: valid }
    }

    /// Whether the update changes `path`.
    pub fn has(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
    }

    /// The mask as events carry it.
    pub fn to_proto(&self) -> prost_types::FieldMask {
        prost_types::FieldMask {
            paths: self.paths.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_every_mutable_field_and_unknown_paths_are_refused() {
        let mut v = Violations::new();
        let all = UpdateMask::parse(None, &["name", "description"], &mut v);
        assert!(all.has("name") && all.has("description"));
        let some = UpdateMask::parse(
            Some(&prost_types::FieldMask {
                paths: vec!["description".into(), "description".into()],
            }),
            &["name", "description"],
            &mut v,
        );
        assert!(some.has("description") && !some.has("name"));
        assert_eq!(some.to_proto().paths.len(), 1);
        assert!(v.finish().is_ok());
        let mut v = Violations::new();
        UpdateMask::parse(
            Some(&prost_types::FieldMask {
                paths: vec!["id".into()],
            }),
            &["name"],
            &mut v,
        );
        assert!(v.has("update_mask.paths[0]"));
    }
}
