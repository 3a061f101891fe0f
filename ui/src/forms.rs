//! What a form page needs besides its fields: the values the user typed (shown again when
//! the form comes back with an error) and the errors, each tied to the field it is about.

use std::collections::BTreeMap;

/// The errors of a submitted form. A field error names the field as the application
/// services do (`name`, `addresses[1]`, `conditions.time_zone`); a general error has no field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormErrors {
    /// Errors about one field: (field, message).
    pub fields: Vec<(String, String)>,
    /// Errors about the whole request.
    pub general: Vec<String>,
}

impl FormErrors {
    /// No errors.
    pub fn none() -> Self {
        Self::default()
    }

    /// One error about `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            fields: vec![(field.into(), message.into())],
            general: Vec::new(),
        }
    }

    /// One error about the whole request.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            fields: Vec::new(),
            general: vec![message.into()],
        }
    }

    /// Whether there is any error.
    pub fn any(&self) -> bool {
        !self.fields.is_empty() || !self.general.is_empty()
    }

    /// The message for `field` or one of its parts (`addresses` matches `addresses[1]`,
    /// `conditions` matches `conditions.time_zone`).
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| {
                f == field
                    || f.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with('[') || rest.starts_with('.'))
            })
            .map(|(_, m)| m.as_str())
    }

    /// The CSS class for an input: `invalid` when its field has an error.
    pub fn class(&self, field: &str) -> &'static str {
        if self.get(field).is_some() {
            "invalid"
        } else {
            ""
        }
    }
}

/// The values of a submitted form, to fill the inputs in again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormValues {
    values: BTreeMap<String, Vec<String>>,
}

impl FormValues {
    /// Values from name/value pairs as a form posts them.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            values.entry(k.to_owned()).or_default().push(v.to_owned());
        }
        Self { values }
    }

    /// Sets `name` to one value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.values.insert(name.to_owned(), vec![value.into()]);
    }

    /// Sets `name` to several values (checkboxes, multi-selects).
    pub fn set_all(&mut self, name: &str, values: Vec<String>) {
        self.values.insert(name.to_owned(), values);
    }

    /// The first value of `name`, or the empty string.
    pub fn get(&self, name: &str) -> &str {
        self.values
            .get(name)
            .and_then(|v| v.first())
            .map_or("", String::as_str)
    }

    /// Whether `name` has the value `value` (a checked checkbox, a selected option).
    pub fn has(&self, name: &str, value: &str) -> bool {
        self.values
            .get(name)
            .is_some_and(|v| v.iter().any(|x| x == value))
    }

    /// Whether a checkbox `name` was checked.
    pub fn checked(&self, name: &str) -> bool {
        self.values
            .get(name)
            .is_some_and(|v| v.iter().any(|x| x == "on" || x == "true"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_match_a_field_and_its_parts() {
        let e = FormErrors {
            fields: vec![
                ("addresses[1]".into(), "bad".into()),
                ("conditions.time_zone".into(), "tz".into()),
            ],
            general: vec![],
        };
        assert_eq!(e.get("addresses"), Some("bad"));
        assert_eq!(e.get("conditions.time_zone"), Some("tz"));
        assert_eq!(e.get("conditions"), Some("tz"));
        assert_eq!(e.get("address"), None, "a prefix of the name is not a part");
        assert_eq!(e.class("addresses"), "invalid");
        assert_eq!(e.class("name"), "");
        assert!(e.any());
        assert!(!FormErrors::none().any());
    }

    #[test]
    fn values_round_trip() {
        let v = FormValues::from_pairs([("days", "mon"), ("days", "tue"), ("name", "x")]);
        assert!(v.has("days", "tue"));
        assert!(!v.has("days", "sun"));
        assert_eq!(v.get("name"), "x");
        assert_eq!(v.get("missing"), "");
        let c = FormValues::from_pairs([("disabled", "on")]);
        assert!(c.checked("disabled"));
        assert!(!c.checked("other"));
    }
}
