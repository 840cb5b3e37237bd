//! How titles, descriptions, tags and queries become words, and words become the index terms a video is
//! found by.
//!
//! Text is folded before it is split: compatibility decomposition (NFKD), combining marks dropped, then
//! lowercase, so `Café`, `CAFE` and `ｃａｆｅ` are one word. Words are the runs of letters and digits;
//! everything else separates them.

use std::collections::BTreeSet;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Words are compared on their first this many characters (longer ones are cut).
pub const WORD_CHARS: usize = 24;
/// Distinct words indexed per video: the title's first, then the tags', then the description's.
pub const WORDS_PER_VIDEO: usize = 256;
/// Words a query may hold.
pub const QUERY_WORDS: usize = 8;
/// Characters a query may hold.
pub const QUERY_CHARS: usize = 200;

/// The folded words of `text`, in order, each cut to [`WORD_CHARS`] characters.
pub fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = 0;
    for c in text.nfkd().filter(|c| !is_combining_mark(*c)) {
        if c.is_alphanumeric() {
            if chars < WORD_CHARS {
                word.extend(c.to_lowercase().filter(|c| !is_combining_mark(*c)));
                chars += 1;
            }
        } else if !word.is_empty() {
            words.push(std::mem::take(&mut word));
            chars = 0;
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The term under which every searchable video is listed, newest first.
pub const ALL: &str = "all";

/// The term a word is found by when it is matched whole.
pub fn whole(word: &str) -> String {
    format!("w:{word}")
}

/// The term a word is found by when it is matched as the start of a word.
pub fn prefix(word: &str) -> String {
    format!("p:{word}")
}

/// Every term a video with this text is found by: [`ALL`], each distinct word whole, and every prefix
/// of each (the word itself included).
pub fn terms<'a>(title: &'a str, tags: impl IntoIterator<Item = &'a String>, description: &'a str) -> BTreeSet<String> {
    let mut distinct: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let texts = std::iter::once(title)
        .chain(tags.into_iter().map(String::as_str))
        .chain(std::iter::once(description));
    'texts: for text in texts {
        for word in words(text) {
            if seen.len() == WORDS_PER_VIDEO {
                break 'texts;
            }
            if seen.insert(word.clone()) {
                distinct.push(word);
            }
        }
    }
    let mut terms = BTreeSet::from([ALL.to_owned()]);
    for word in &distinct {
        terms.insert(whole(word));
        for (end, _) in word.char_indices().skip(1) {
            terms.insert(prefix(&word[..end]));
        }
        terms.insert(prefix(word));
    }
    terms
}

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryFault {
    #[error("q must be at most {QUERY_CHARS} characters")]
    TooLong,
    #[error("q must hold at most {QUERY_WORDS} words")]
    TooManyWords,
}

/// The terms a query looks for: every word whole, except the last, which is matched as a prefix (search
/// as you type) unless the query ends after it (`"cat "` looks for the word `cat` only). Repeated terms
/// count once. `None` when the query holds no word.
pub fn query_terms(q: &str) -> Result<Option<Vec<String>>, QueryFault> {
    if q.chars().count() > QUERY_CHARS {
        return Err(QueryFault::TooLong);
    }
    let words = words(q);
    if words.len() > QUERY_WORDS {
        return Err(QueryFault::TooManyWords);
    }
    let Some((last, rest)) = words.split_last() else {
        return Ok(None);
    };
    let typing = q.chars().last().is_some_and(char::is_alphanumeric) || q.nfkd().last().is_some_and(is_combining_mark);
    let mut terms: Vec<String> = Vec::with_capacity(words.len());
    for term in rest
        .iter()
        .map(|w| whole(w))
        .chain(std::iter::once(if typing { prefix(last) } else { whole(last) }))
    {
        if !terms.contains(&term) {
            terms.push(term);
        }
    }
    Ok(Some(terms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fold_case_accents_and_width() {
        assert_eq!(
            words("Café CAFE ｃａｆｅ cafe\u{301}"),
            ["cafe", "cafe", "cafe", "cafe"]
        );
        assert_eq!(words("Ñandú—São_Paulo, 4K!"), ["nandu", "sao", "paulo", "4k"]);
        assert_eq!(words("  ...  "), Vec::<String>::new());
        assert_eq!(words("Größe İSTANBUL"), ["große", "istanbul"]);
        let long = "a".repeat(WORD_CHARS + 10);
        assert_eq!(words(&format!("{long} b")), ["a".repeat(WORD_CHARS), "b".into()]);
    }

    #[test]
    fn terms_hold_whole_words_and_every_prefix() {
        let terms = terms("Cat café", &["Cats".to_owned()], "");
        let expected: BTreeSet<String> = [
            "all", "w:cat", "w:cafe", "w:cats", "p:c", "p:ca", "p:cat", "p:cats", "p:caf", "p:cafe",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(terms, expected);
    }

    #[test]
    fn terms_stop_at_the_word_limit_title_first() {
        let description: Vec<String> = (0..2 * WORDS_PER_VIDEO).map(|n| format!("d{n}")).collect();
        let terms = terms("title", &[], &description.join(" "));
        assert!(terms.contains("w:title"));
        assert!(terms.contains(&format!("w:d{}", WORDS_PER_VIDEO - 2)));
        assert!(!terms.contains(&format!("w:d{}", WORDS_PER_VIDEO - 1)));
    }

    #[test]
    fn the_last_word_is_a_prefix_while_typing() {
        assert_eq!(
            query_terms("Funny CA").expect("q"),
            Some(vec!["w:funny".into(), "p:ca".into()])
        );
        assert_eq!(
            query_terms("funny cat ").expect("q"),
            Some(vec!["w:funny".into(), "w:cat".into()])
        );
        assert_eq!(
            query_terms("cat cat").expect("q"),
            Some(vec!["w:cat".into(), "p:cat".into()])
        );
        assert_eq!(query_terms("cat, cat.").expect("q"), Some(vec!["w:cat".into()]));
        assert_eq!(query_terms("  ?! ").expect("q"), None);
        assert_eq!(query_terms("").expect("q"), None);
    }

    #[test]
    fn queries_have_limits() {
        assert_eq!(
            query_terms(&"a ".repeat(QUERY_WORDS + 1)),
            Err(QueryFault::TooManyWords)
        );
        assert_eq!(query_terms(&"a".repeat(QUERY_CHARS + 1)), Err(QueryFault::TooLong));
        assert!(query_terms(&"a ".repeat(QUERY_WORDS)).is_ok());
    }
}
