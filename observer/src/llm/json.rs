//! Lenient reads of JSON from other processes: a missing field or one of the wrong type is `None`.
use std::{borrow::Cow, fmt, ops::Deref};

use serde::{Deserialize, Deserializer, de::Visitor};
use serde_json::Value;

/// A JSON string in a typed struct, borrowed from the text unless it had escapes to undo.
/// (Serde's own `Cow<str>` copies every string unless it is the field's whole type.)
pub(crate) struct JsonStr<'a>(Cow<'a, str>);

impl<'a> From<&'a str> for JsonStr<'a> {
    fn from(text: &'a str) -> Self {
        JsonStr(Cow::Borrowed(text))
    }
}

impl Deref for JsonStr<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for JsonStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = JsonStr<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

pub(crate) fn parse(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

pub(crate) fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key)?.as_str()
}

pub(crate) fn u64_at(value: &Value, key: &str) -> Option<u64> {
    value.get(key)?.as_u64()
}

/// The array at `key`, empty when absent or not an array.
pub(crate) fn array_at<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The object at `key`, if it is one (providers send `"usage": null` and the like).
pub(crate) fn object_at<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.get(key).filter(|v| v.is_object())
}

/// Appends a streamed fragment to the string at `key` of an object, creating it if needed.
pub(crate) fn append_str(target: &mut Value, key: &str, fragment: &str) {
    let Some(object) = target.as_object_mut() else {
        return;
    };
    let slot = object.entry(key).or_insert_with(|| Value::from(""));
    if let Value::String(text) = slot {
        text.push_str(fragment);
    }
}
