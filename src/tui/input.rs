//! Text inputs (the search query, the `/` filters, the `:` command line, the typed Hard Delete
//! confirmation) on `tui-input`: one line with a cursor and the usual line-editing keys.
//!
//! The editing keys are fixed (not in the keymap) and listed in one table, `EDIT_KEYS`, which
//! both the key resolution and the help overlay read. In a text-entry mode a key the mode
//! itself binds (enter, esc, …) wins; then an editing key; then the global bindings.

use super::keymap::KeyChord;
use crossterm::event::{KeyCode, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;
use std::fmt;
use tui_input::{Input, InputRequest};

/// The line-editing keys: (key, what it does to the input, description for help).
pub const EDIT_KEYS: &[(&str, InputRequest, &str)] = &[
    ("left", InputRequest::GoToPrevChar, "char left"),
    ("right", InputRequest::GoToNextChar, "char right"),
    ("home", InputRequest::GoToStart, "start"),
    ("ctrl+a", InputRequest::GoToStart, "start"),
    ("end", InputRequest::GoToEnd, "end"),
    ("ctrl+e", InputRequest::GoToEnd, "end"),
    ("alt+b", InputRequest::GoToPrevWord, "word left"),
    ("ctrl+left", InputRequest::GoToPrevWord, "word left"),
    ("alt+f", InputRequest::GoToNextWord, "word right"),
    ("ctrl+right", InputRequest::GoToNextWord, "word right"),
    ("backspace", InputRequest::DeletePrevChar, "delete left"),
    ("delete", InputRequest::DeleteNextChar, "delete right"),
    ("ctrl+w", InputRequest::DeletePrevWord, "delete word left"),
    (
        "alt+backspace",
        InputRequest::DeletePrevWord,
        "delete word left",
    ),
    ("alt+d", InputRequest::DeleteNextWord, "delete word right"),
    ("ctrl+u", InputRequest::DeleteFromStart, "delete to start"),
    ("ctrl+k", InputRequest::DeleteTillEnd, "delete to end"),
    ("ctrl+y", InputRequest::Yank, "paste deleted"),
];

/// The edit a key makes in a text input: a printable character types itself; the keys of
/// `EDIT_KEYS` move or delete. `None`: not an editing key.
pub fn edit_request(key: KeyChord) -> Option<InputRequest> {
    if let KeyCode::Char(c) = key.code
        && !key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
    {
        return Some(InputRequest::InsertChar(c));
    }
    EDIT_KEYS
        .iter()
        .find(|(text, _, _)| KeyChord::parse(text).is_ok_and(|chord| chord == key))
        .map(|(_, request, _)| *request)
}

/// The editing keys grouped by what they do, in table order: (`"left"`, `"char left"`),
/// (`"home ctrl+a"`, `"start"`), … for the help overlay.
pub fn edit_key_groups() -> Vec<(String, &'static str)> {
    let mut groups: Vec<(String, &'static str)> = Vec::new();
    for (key, _, describe) in EDIT_KEYS {
        match groups.iter_mut().find(|(_, d)| d == describe) {
            Some((keys, _)) => {
                keys.push(' ');
                keys.push_str(key);
            }
            None => groups.push((key.to_string(), describe)),
        }
    }
    groups
}

/// One line of text with a cursor.
#[derive(Debug, Clone, Default)]
pub struct TextInput {
    input: Input,
}

impl PartialEq for TextInput {
    fn eq(&self, other: &TextInput) -> bool {
        self.value() == other.value() && self.cursor() == other.cursor()
    }
}

impl PartialEq<&str> for TextInput {
    fn eq(&self, other: &&str) -> bool {
        self.value() == *other
    }
}

impl PartialEq<String> for TextInput {
    fn eq(&self, other: &String) -> bool {
        self.value() == other
    }
}

impl fmt::Display for TextInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.value())
    }
}

impl TextInput {
    /// An input holding `value`, the cursor at its end.
    pub fn new(value: impl Into<String>) -> TextInput {
        TextInput {
            input: Input::new(value.into()),
        }
    }

    pub fn value(&self) -> &str {
        self.input.value()
    }

    /// Characters before the cursor.
    pub fn cursor(&self) -> usize {
        self.input.cursor()
    }

    pub fn is_empty(&self) -> bool {
        self.value().is_empty()
    }

    pub fn char_count(&self) -> usize {
        self.value().chars().count()
    }

    /// Replaces the text; the cursor goes to its end.
    pub fn set(&mut self, value: impl Into<String>) {
        self.input = Input::new(value.into());
    }

    pub fn clear(&mut self) {
        self.input.reset();
    }

    /// Applies one edit; true when the text (not only the cursor) changed.
    pub fn edit(&mut self, request: InputRequest) -> bool {
        self.input
            .handle(request)
            .is_some_and(|changed| changed.value)
    }

    /// Columns scrolled off the left when drawn `width` columns wide (the cursor stays in view;
    /// one column is kept for the cursor after the last character).
    pub fn scroll(&self, width: u16) -> usize {
        self.input
            .visual_scroll(usize::from(width.saturating_sub(1).max(1)))
    }

    /// Draws `line` (the input's text, styled by the caller) into `area`, scrolled so the
    /// cursor stays visible; with `focused`, the terminal cursor is put on it.
    pub fn render(&self, frame: &mut Frame, area: Rect, line: Line, focused: bool) {
        if area.width == 0 || area.height == 0 {
            return;
        }
        let scroll = self.scroll(area.width);
        let offset = u16::try_from(scroll).unwrap_or(u16::MAX);
        frame.render_widget(Paragraph::new(line).scroll((0, offset)), area);
        if focused {
            let column = self.input.visual_cursor().saturating_sub(scroll);
            let column = u16::try_from(column).unwrap_or(u16::MAX);
            let x = area
                .x
                .saturating_add(column)
                .min(area.right().saturating_sub(1));
            frame.set_cursor_position(Position::new(x, area.y));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edit_key_parses_and_none_is_printable() {
        for (key, _, _) in EDIT_KEYS {
            let chord = KeyChord::parse(key).unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(edit_request(chord).is_some(), "{key}");
        }
    }

    #[test]
    fn word_keys_move_and_delete_by_words_and_ctrl_u_deletes_to_the_start() {
        let mut input = TextInput::new("from:evil.example urgent invoice");
        let key = |k: &str| edit_request(KeyChord::parse(k).unwrap()).unwrap();
        // Word left (a query term is one word): the cursor moves, the text does not change.
        assert!(!input.edit(key("alt+b")));
        assert_eq!(input.cursor(), "from:evil.example urgent ".len());
        assert!(!input.edit(key("ctrl+left")));
        assert_eq!(input.cursor(), "from:evil.example ".len());
        // Word right: to the start of the next word.
        assert!(!input.edit(key("alt+f")));
        assert_eq!(input.cursor(), "from:evil.example urgent ".len());
        // ctrl+w deletes the word before the cursor.
        assert!(input.edit(key("ctrl+w")));
        assert_eq!(input.value(), "from:evil.example invoice");
        assert_eq!(input.cursor(), "from:evil.example ".len());
        // ctrl+u deletes from the start to the cursor; ctrl+y puts back both deletions
        // (consecutive deletions add up, as in readline).
        assert!(input.edit(key("ctrl+u")));
        assert_eq!((input.value(), input.cursor()), ("invoice", 0));
        assert!(input.edit(key("ctrl+y")));
        assert_eq!(input.value(), "from:evil.example urgent invoice");
        // Typing inserts at the cursor; delete takes the character after it.
        assert!(input.edit(key("delete")));
        assert!(input.edit(key("x")));
        assert_eq!(input.value(), "from:evil.example urgent xnvoice");
        assert!(!input.edit(key("home")));
        assert!(input.edit(key("ctrl+k")));
        assert!(input.is_empty());
    }
}
