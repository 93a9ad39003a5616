//! Turning wire fields into domain values and back, the same way in every service:
//! ids, lists of ids, timestamps, and text with its length and character rules.

use agora_proto::MAX_PAGE_SIZE;
use prost_types::Timestamp;
use time::OffsetDateTime;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
use uuid::Uuid;

use crate::ApiError;

/// The UUID in `field`, or INVALID_ARGUMENT naming the field.
pub fn parse_id(field: &str, value: &str) -> Result<Uuid, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    Uuid::try_parse(value).map_err(|_| ApiError::invalid(field, "must be a UUID"))
}

/// The UUID in an optional `field`: `None` when it is empty.
pub fn parse_optional_id(field: &str, value: &str) -> Result<Option<Uuid>, ApiError> {
    match value {
        "" => Ok(None),
        value => parse_id(field, value).map(Some),
    }
}

/// The UUIDs of a batch request, in the order given, repeats kept: at least one
/// and at most [`MAX_PAGE_SIZE`]. A bad one is named by its index (`ids[2]`).
pub fn parse_ids(field: &str, values: &[String]) -> Result<Vec<Uuid>, ApiError> {
    if values.is_empty() {
        return Err(ApiError::invalid(field, "required"));
    }
    if values.len() > MAX_PAGE_SIZE {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_PAGE_SIZE} ids"),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(index, value)| parse_id(&format!("{field}[{index}]"), value))
        .collect()
}

/// `ids` sorted, each once: what a batch query looks up.
pub fn distinct(ids: &[Uuid]) -> Vec<Uuid> {
    let mut distinct = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
}

/// A client-chosen request id (AIP-155): empty, or a UUID.
pub fn parse_request_id(field: &str, value: &str) -> Result<Option<Uuid>, ApiError> {
    parse_optional_id(field, value)
}

pub fn timestamp(time: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: time.unix_timestamp(),
        nanos: time.nanosecond() as i32,
    }
}

/// What a text field may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRule {
    /// The most characters (not bytes).
    pub max_chars: usize,
    /// Whether newline and tab are allowed; other control characters never are
    /// (PostgreSQL text cannot even hold a NUL).
    pub multiline: bool,
}

impl TextRule {
    /// Checks `text` as given: at most `max_chars`, no forbidden control characters.
    pub fn check(self, field: &str, text: &str) -> Result<(), ApiError> {
        if text.chars().count() > self.max_chars {
            return Err(ApiError::invalid(
                field,
                format!("at most {} characters", self.max_chars),
            ));
        }
        let forbidden = |c: char| c.is_control() && !(self.multiline && matches!(c, '\n' | '\t'));
        if text.chars().any(forbidden) {
            return Err(ApiError::invalid(
                field,
                "must not contain control characters",
            ));
        }
        Ok(())
    }

    /// `raw` without surrounding white space, which must leave some text with a
    /// visible character, checked.
    pub fn required(self, field: &str, raw: &str) -> Result<String, ApiError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(ApiError::invalid(field, "required"));
        }
        self.check(field, text)?;
        if !text.chars().any(is_visible) {
            return Err(ApiError::invalid(field, "must contain a visible character"));
        }
        Ok(text.to_owned())
    }
}

/// Whether `c` shows as something: not white space, not a control or format
/// character (zero-width space U+200B, word joiner U+2060, byte order mark
/// U+FEFF, bidi marks, tags), and not one of the other characters Unicode
/// defines to be invisible (Default_Ignorable_Code_Point) or that render blank.
fn is_visible(c: char) -> bool {
    let invisible = c.is_whitespace()
        || matches!(
            c.general_category(),
            GeneralCategory::Control | GeneralCategory::Format
        )
        || matches!(
            c,
            '\u{034F}' // combining grapheme joiner
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
            | '\u{17B4}' | '\u{17B5}' // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}' // Mongolian variation selectors
            | '\u{2800}' // Braille pattern blank
            | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' // variation selectors
        );
    !invisible
}

#[cfg(test)]
mod tests {
    use super::*;

    const TITLE: TextRule = TextRule {
        max_chars: 5,
        multiline: false,
    };
    const BODY: TextRule = TextRule {
        max_chars: 5,
        multiline: true,
    };

    #[test]
    fn text_is_trimmed_and_counted_in_characters() {
        assert_eq!(TITLE.required("t", "  héllo  ").unwrap(), "héllo");
        assert!(
            TITLE.required("t", "界界界界界").is_ok(),
            "5 wide characters fit"
        );
        assert!(TITLE.required("t", "界界界界界界").is_err());
        for blank in ["", "   ", "\n\t"] {
            assert!(TITLE.required("t", blank).is_err(), "{blank:?}");
        }
    }

    #[test]
    fn text_of_invisible_characters_only_is_blank() {
        for invisible in [
            "\u{200B}",
            "\u{FEFF}",
            "\u{2060}",
            "\u{200B}\u{FEFF}\u{2060}",
            " \u{200D} ",
            "\u{3164}",
            "\u{FE0F}\u{00AD}",
            "\u{E0041}",
        ] {
            let error = BODY.required("t", invisible).unwrap_err();
            assert!(
                error.to_string().contains("visible"),
                "{invisible:?}: {error}"
            );
        }
        // One visible character is enough, and invisible ones beside it stay.
        assert_eq!(TITLE.required("t", "\u{200B}a").unwrap(), "\u{200B}a");
        assert_eq!(TITLE.required("t", "👍\u{FE0F}").unwrap(), "👍\u{FE0F}");
    }

    #[test]
    fn control_characters_are_refused_but_newline_and_tab_in_multiline_text() {
        for bad in ["a\0b", "a\u{7}b", "a\rb", "a\u{1b}[3"] {
            assert!(TITLE.required("t", bad).is_err(), "{bad:?}");
            assert!(BODY.required("t", bad).is_err(), "{bad:?}");
        }
        assert!(TITLE.required("t", "a\nb").is_err());
        assert!(TITLE.check("t", "a\tb").is_err());
        assert_eq!(BODY.required("t", " a\n\tb ").unwrap(), "a\n\tb");
    }

    #[test]
    fn id_lists_keep_their_order_and_name_a_bad_entry_by_index() {
        let [a, b] = [Uuid::now_v7(), Uuid::now_v7()];
        let given = [b.to_string(), a.to_string(), b.to_string()];
        assert_eq!(parse_ids("ids", &given).unwrap(), [b, a, b]);
        assert_eq!(distinct(&[b, a, b]), [a, b]);

        let error = parse_ids("ids", &[a.to_string(), "nope".to_owned()]).unwrap_err();
        assert!(error.to_string().contains("ids[1]"), "{error}");
        assert!(parse_ids("ids", &[]).is_err(), "at least one");
        let too_many = vec![a.to_string(); MAX_PAGE_SIZE + 1];
        assert!(parse_ids("ids", &too_many).is_err());
    }
}
