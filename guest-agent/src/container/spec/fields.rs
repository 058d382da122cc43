//! The first pass: the table of supported `config.json` fields
//! ([`SUPPORTED`]) and the walk that refuses any other field by name.

use serde_json::Value;

use super::SpecError;

/// The shape of the supported fields: which keys an object may hold.
pub(super) enum Shape {
    /// Any value; `oci-spec` checks its type.
    Leaf,
    /// An object with only these keys.
    Object(&'static [(&'static str, Shape)]),
    /// An array of elements of this shape.
    Array(&'static Shape),
}

const ID_MAPPING: Shape = Shape::Object(&[
    ("containerID", Shape::Leaf),
    ("hostID", Shape::Leaf),
    ("size", Shape::Leaf),
]);

/// Every field crvmm supports. Anything else is refused by name.
pub(super) const SUPPORTED: Shape = Shape::Object(&[
    ("ociVersion", Shape::Leaf),
    (
        "root",
        Shape::Object(&[("path", Shape::Leaf), ("readonly", Shape::Leaf)]),
    ),
    ("hostname", Shape::Leaf),
    ("domainname", Shape::Leaf),
    ("annotations", Shape::Leaf),
    (
        "mounts",
        Shape::Array(&Shape::Object(&[
            ("destination", Shape::Leaf),
            ("type", Shape::Leaf),
            ("source", Shape::Leaf),
            ("options", Shape::Leaf),
        ])),
    ),
    (
        "process",
        Shape::Object(&[
            ("terminal", Shape::Leaf),
            ("args", Shape::Leaf),
            ("env", Shape::Leaf),
            ("cwd", Shape::Leaf),
            (
                "user",
                Shape::Object(&[
                    ("uid", Shape::Leaf),
                    ("gid", Shape::Leaf),
                    ("umask", Shape::Leaf),
                    ("additionalGids", Shape::Leaf),
                ]),
            ),
            ("noNewPrivileges", Shape::Leaf),
            (
                "rlimits",
                Shape::Array(&Shape::Object(&[
                    ("type", Shape::Leaf),
                    ("soft", Shape::Leaf),
                    ("hard", Shape::Leaf),
                ])),
            ),
        ]),
    ),
    (
        "linux",
        Shape::Object(&[
            (
                "namespaces",
                Shape::Array(&Shape::Object(&[
                    ("type", Shape::Leaf),
                    ("path", Shape::Leaf),
                ])),
            ),
            ("uidMappings", Shape::Array(&ID_MAPPING)),
            ("gidMappings", Shape::Array(&ID_MAPPING)),
            (
                "resources",
                Shape::Object(&[
                    ("memory", Shape::Object(&[("limit", Shape::Leaf)])),
                    ("pids", Shape::Object(&[("limit", Shape::Leaf)])),
                ]),
            ),
        ]),
    ),
]);

/// Refuses the first field of `value` outside `shape`, by its path.
pub(super) fn check_fields(value: &Value, shape: &Shape, path: &str) -> Result<(), SpecError> {
    match (shape, value) {
        (Shape::Object(fields), Value::Object(map)) => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let Some((_, child_shape)) = fields.iter().find(|(name, _)| name == key) else {
                    return Err(SpecError::Unsupported(child_path));
                };
                check_fields(child, child_shape, &child_path)?;
            }
            Ok(())
        }
        (Shape::Array(element), Value::Array(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_fields(item, element, &format!("{path}[{i}]"))),
        // Leaves, and values of the wrong type (left to oci-spec to report).
        _ => Ok(()),
    }
}
