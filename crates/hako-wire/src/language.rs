//! The languages hako runs.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Language {
    #[serde(rename = "python3")]
    Python3,
    #[serde(rename = "nodejs")]
    Nodejs,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python3 => "python3",
            Language::Nodejs => "nodejs",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsupported language")]
pub struct UnsupportedLanguage;

impl FromStr for Language {
    type Err = UnsupportedLanguage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "python3" => Ok(Language::Python3),
            "nodejs" => Ok(Language::Nodejs),
            _ => Err(UnsupportedLanguage),
        }
    }
}
