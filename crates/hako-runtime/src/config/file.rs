//! Reading `conf/config.yaml`: YAML into [`Config`], with the keys nobody reads reported.
//! Dify's files are written for Go's YAML: an empty value is the type's empty value, and
//! `allowed_syscalls` may be a list of names and numbers or one comma-separated string.

use super::env::split_list;
use super::{Config, ConfigError};
use serde::{Deserialize, Deserializer};
use std::path::Path;

/// Reads and parses the file at `path`; unknown keys become warnings.
pub(super) fn read_file(path: &Path, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (config, unknown) = parse_yaml(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    for key in unknown {
        warnings.push(format!("unknown key {key} in {} ignored", path.display()));
    }
    Ok(config)
}

/// Parses a config document; returns it with the paths of the keys it ignored.
fn parse_yaml(text: &str) -> Result<(Config, Vec<String>), serde_saphyr::Error> {
    if text.trim().is_empty() {
        return Ok((Config::default(), Vec::new()));
    }
    let mut unknown = Vec::new();
    let config = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
    })?;
    Ok((config, unknown))
}

/// `null` (an empty YAML value) becomes the type's empty value, as in Go.
pub(super) fn nullable<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(de).map(Option::unwrap_or_default)
}

/// `allowed_syscalls`: null, a list of names and/or numbers, or one comma-separated string.
pub(super) fn syscall_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    use serde::de::{Error, SeqAccess, Visitor};
    use std::fmt;

    struct Item(String);
    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Item;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a syscall name or number")
                }
                fn visit_str<E: Error>(self, v: &str) -> Result<Item, E> {
                    Ok(Item(v.trim().to_string()))
                }
                fn visit_u64<E: Error>(self, v: u64) -> Result<Item, E> {
                    Ok(Item(v.to_string()))
                }
                fn visit_i64<E: Error>(self, v: i64) -> Result<Item, E> {
                    Ok(Item(v.to_string()))
                }
            }
            de.deserialize_any(V)
        }
    }

    struct List;
    impl<'de> Visitor<'de> for List {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of syscall names or numbers")
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(split_list(v))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(Item(item)) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    de.deserialize_any(List)
}
