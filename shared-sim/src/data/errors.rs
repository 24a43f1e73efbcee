//! Problems in data files, each naming the file, the entry and the field.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one data file, naming the entry and the field where they are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataError {
    pub file: PathBuf,
    /// The id of the card, item, crop, recipe or deck (or "rules").
    pub entry: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(entry) = &self.entry {
            write!(f, ": `{entry}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, " field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a data folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataErrors(pub Vec<DataError>);

impl fmt::Display for DataErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DataErrors {}

pub(super) struct Collector<'a> {
    pub(super) file: &'a Path,
    pub(super) errors: &'a mut Vec<DataError>,
}

impl Collector<'_> {
    pub(super) fn push(&mut self, entry: &str, field: Option<&str>, message: impl Into<String>) {
        self.errors.push(DataError {
            file: self.file.to_path_buf(),
            entry: Some(entry.to_string()),
            field: field.map(str::to_string),
            message: message.into(),
        });
    }

    pub(super) fn range(&mut self, entry: &str, field: &str, value: i32, min: i32, max: i32) {
        if value < min || value > max {
            self.push(
                entry,
                Some(field),
                format!("{value} is out of range {min}..={max}"),
            );
        }
    }
}
