//! Keymap: per-mode tables of `action = "key key…"` with human key strings (`ctrl+r`,
//! `shift+tab`, `space`, `G`), embedded defaults merged with `config.ui.keys`. A key bound to
//! two actions inside one mode is an error naming both.

use super::action::Action;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::BTreeMap;
use std::fmt;

/// The embedded default bindings (also the documentation of every mode and action).
pub const DEFAULT_KEYMAP: &str = include_str!("keymap.default.toml");

/// A keymap mode: the focused pane or the text input that receives keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Global,
    Search,
    /// Typing in the search query box.
    Query,
    Recipients,
    /// Plan preview / confirmation overlay.
    Plan,
    Policy,
    Metrics,
    Jobs,
    Audit,
    Tenants,
    /// `:` command line and `/` filter inputs.
    Prompt,
    /// A yes/no question (quit with a job running, restore, resume).
    Confirm,
}

impl Mode {
    pub const ALL: [Mode; 12] = [
        Mode::Global,
        Mode::Search,
        Mode::Query,
        Mode::Recipients,
        Mode::Plan,
        Mode::Policy,
        Mode::Metrics,
        Mode::Jobs,
        Mode::Audit,
        Mode::Tenants,
        Mode::Prompt,
        Mode::Confirm,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Global => "global",
            Mode::Search => "search",
            Mode::Query => "query",
            Mode::Recipients => "recipients",
            Mode::Plan => "plan",
            Mode::Policy => "policy",
            Mode::Metrics => "metrics",
            Mode::Jobs => "jobs",
            Mode::Audit => "audit",
            Mode::Tenants => "tenants",
            Mode::Prompt => "prompt",
            Mode::Confirm => "confirm",
        }
    }

    pub fn from_name(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Text-entry modes: printable keys type unless the mode itself binds them.
    pub fn is_text_entry(self) -> bool {
        matches!(self, Mode::Query | Mode::Plan | Mode::Prompt)
    }
}

/// A key with modifiers, normalized so that a parsed string and a terminal event compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyChord {
    pub code: KeyCode,
    pub modifiers: KeyModifiers,
}

impl KeyChord {
    fn normalized(code: KeyCode, modifiers: KeyModifiers) -> KeyChord {
        let mut modifiers =
            modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
        let code = match code {
            // The character already says whether shift was held.
            KeyCode::Char(c) => {
                modifiers.remove(KeyModifiers::SHIFT);
                if modifiers.contains(KeyModifiers::CONTROL) {
                    KeyCode::Char(c.to_ascii_lowercase())
                } else {
                    KeyCode::Char(c)
                }
            }
            KeyCode::BackTab => {
                modifiers.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            KeyCode::Tab if modifiers.contains(KeyModifiers::SHIFT) => {
                modifiers.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            other => other,
        };
        KeyChord { code, modifiers }
    }

    /// The chord of a terminal key event.
    pub fn from_event(event: &KeyEvent) -> KeyChord {
        KeyChord::normalized(event.code, event.modifiers)
    }

    /// Parses `ctrl+r`, `shift+tab`, `alt+x`, `space`, `enter`, `f5`, `G`, `+`.
    pub fn parse(text: &str) -> Result<KeyChord, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty key".into());
        }
        let mut modifiers = KeyModifiers::NONE;
        let mut rest = text;
        // Split off modifiers; a lone "+" is the plus key.
        while let Some((head, tail)) = rest.split_once('+') {
            if tail.is_empty() {
                break;
            }
            match head.to_ascii_lowercase().as_str() {
                "ctrl" | "control" => modifiers |= KeyModifiers::CONTROL,
                "alt" | "meta" => modifiers |= KeyModifiers::ALT,
                "shift" => modifiers |= KeyModifiers::SHIFT,
                other => {
                    return Err(format!(
                        "unknown modifier {other:?} (use ctrl, alt or shift)"
                    ));
                }
            }
            rest = tail;
        }
        let lower = rest.to_ascii_lowercase();
        let code = match lower.as_str() {
            "enter" | "return" => KeyCode::Enter,
            "esc" | "escape" => KeyCode::Esc,
            "tab" => KeyCode::Tab,
            "backtab" => KeyCode::BackTab,
            "space" => KeyCode::Char(' '),
            "backspace" => KeyCode::Backspace,
            "delete" | "del" => KeyCode::Delete,
            "insert" | "ins" => KeyCode::Insert,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "pageup" | "pgup" => KeyCode::PageUp,
            "pagedown" | "pgdn" => KeyCode::PageDown,
            _ => {
                let mut chars = rest.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => {
                        if modifiers.contains(KeyModifiers::SHIFT) && c.is_ascii_lowercase() {
                            KeyCode::Char(c.to_ascii_uppercase())
                        } else {
                            KeyCode::Char(c)
                        }
                    }
                    _ => match lower.strip_prefix('f').and_then(|n| n.parse::<u8>().ok()) {
                        Some(n @ 1..=12) => KeyCode::F(n),
                        _ => return Err(format!("unknown key {rest:?}")),
                    },
                }
            }
        };
        Ok(KeyChord::normalized(code, modifiers))
    }
}

impl fmt::Display for KeyChord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.modifiers.contains(KeyModifiers::CONTROL) {
            f.write_str("ctrl+")?;
        }
        if self.modifiers.contains(KeyModifiers::ALT) {
            f.write_str("alt+")?;
        }
        if self.modifiers.contains(KeyModifiers::SHIFT) {
            f.write_str("shift+")?;
        }
        match self.code {
            KeyCode::Char(' ') => f.write_str("space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::Enter => f.write_str("enter"),
            KeyCode::Esc => f.write_str("esc"),
            KeyCode::Tab => f.write_str("tab"),
            KeyCode::BackTab => f.write_str("shift+tab"),
            KeyCode::Backspace => f.write_str("backspace"),
            KeyCode::Delete => f.write_str("delete"),
            KeyCode::Insert => f.write_str("insert"),
            KeyCode::Up => f.write_str("up"),
            KeyCode::Down => f.write_str("down"),
            KeyCode::Left => f.write_str("left"),
            KeyCode::Right => f.write_str("right"),
            KeyCode::Home => f.write_str("home"),
            KeyCode::End => f.write_str("end"),
            KeyCode::PageUp => f.write_str("pageup"),
            KeyCode::PageDown => f.write_str("pagedown"),
            KeyCode::F(n) => write!(f, "f{n}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// Why a keymap was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeymapError {
    #[error("[ui.keys.{mode}]: unknown mode; expected one of: {expected}")]
    UnknownMode { mode: String, expected: String },
    #[error("[ui.keys.{mode}]: unknown action {action:?}")]
    UnknownAction { mode: String, action: String },
    #[error("[ui.keys.{mode}] {action} = {key:?}: {message}")]
    BadKey {
        mode: String,
        action: String,
        key: String,
        message: String,
    },
    #[error(
        "[ui.keys.{mode}]: key \"{key}\" is bound to both {first} and {second}; bind one of them to another key"
    )]
    Duplicate {
        mode: String,
        key: String,
        first: String,
        second: String,
    },
    #[error("embedded default keymap: {0}")]
    Default(String),
}

/// One action and its keys in a mode, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub action: Action,
    pub keys: Vec<KeyChord>,
}

/// The effective keymap.
#[derive(Debug, Clone)]
pub struct Keymap {
    modes: BTreeMap<Mode, Vec<Binding>>,
}

fn parse_keys(mode: &str, action: &str, value: &str) -> Result<Vec<KeyChord>, KeymapError> {
    value
        .split_whitespace()
        .map(|k| {
            KeyChord::parse(k).map_err(|message| KeymapError::BadKey {
                mode: mode.to_string(),
                action: action.to_string(),
                key: k.to_string(),
                message,
            })
        })
        .collect()
}

impl Keymap {
    /// The embedded defaults alone.
    pub fn defaults() -> Result<Keymap, KeymapError> {
        Keymap::with_overrides(&BTreeMap::new())
    }

    /// The embedded defaults merged with `config.ui.keys` (`mode → action → "keys"`): an
    /// override replaces all keys of that action in that mode.
    pub fn with_overrides(
        overrides: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Keymap, KeymapError> {
        let doc: toml_edit::DocumentMut = DEFAULT_KEYMAP
            .parse()
            .map_err(|e: toml_edit::TomlError| KeymapError::Default(e.to_string()))?;
        let mut modes: BTreeMap<Mode, Vec<Binding>> = BTreeMap::new();
        for (mode_name, item) in doc.iter() {
            let mode = Mode::from_name(mode_name)
                .ok_or_else(|| KeymapError::Default(format!("unknown mode {mode_name}")))?;
            let table = item
                .as_table()
                .ok_or_else(|| KeymapError::Default(format!("{mode_name} is not a table")))?;
            let bindings = modes.entry(mode).or_default();
            for (action_name, value) in table.iter() {
                let action = Action::from_name(action_name)
                    .ok_or_else(|| KeymapError::Default(format!("unknown action {action_name}")))?;
                let keys = value.as_str().ok_or_else(|| {
                    KeymapError::Default(format!("{mode_name}.{action_name} is not a string"))
                })?;
                bindings.push(Binding {
                    action,
                    keys: parse_keys(mode_name, action_name, keys)?,
                });
            }
        }
        for (mode_name, actions) in overrides {
            let mode = Mode::from_name(mode_name).ok_or_else(|| KeymapError::UnknownMode {
                mode: mode_name.clone(),
                expected: Mode::ALL.map(Mode::as_str).join(" "),
            })?;
            let bindings = modes.entry(mode).or_default();
            for (action_name, keys) in actions {
                let action =
                    Action::from_name(action_name).ok_or_else(|| KeymapError::UnknownAction {
                        mode: mode_name.clone(),
                        action: action_name.clone(),
                    })?;
                let keys = parse_keys(mode_name, action_name, keys)?;
                match bindings.iter_mut().find(|b| b.action == action) {
                    Some(binding) => binding.keys = keys,
                    None => bindings.push(Binding { action, keys }),
                }
            }
        }
        let keymap = Keymap { modes };
        keymap.check_duplicates()?;
        Ok(keymap)
    }

    fn check_duplicates(&self) -> Result<(), KeymapError> {
        for (mode, bindings) in &self.modes {
            let mut seen: BTreeMap<String, &Action> = BTreeMap::new();
            for binding in bindings {
                for key in &binding.keys {
                    let name = key.to_string();
                    if let Some(first) = seen.get(&name) {
                        if **first != binding.action {
                            return Err(KeymapError::Duplicate {
                                mode: mode.as_str().to_string(),
                                key: name,
                                first: first.name().unwrap_or_default(),
                                second: binding.action.name().unwrap_or_default(),
                            });
                        }
                    } else {
                        seen.insert(name, &binding.action);
                    }
                }
            }
        }
        Ok(())
    }

    /// The action bound to `key` in `mode` itself (no fallback).
    pub fn lookup_in(&self, mode: Mode, key: KeyChord) -> Option<Action> {
        self.modes.get(&mode).and_then(|bindings| {
            bindings
                .iter()
                .find(|b| b.keys.contains(&key))
                .map(|b| b.action.clone())
        })
    }

    /// Resolves a key press in `mode`: the mode's own bindings, then in a text-entry mode the
    /// line-editing keys (a printable key types), then the global ones.
    pub fn resolve(&self, mode: Mode, key: KeyChord) -> Option<Action> {
        if let Some(action) = self.lookup_in(mode, key) {
            return Some(action);
        }
        if mode.is_text_entry()
            && let Some(edit) = super::input::edit_request(key)
        {
            return Some(Action::Edit(edit));
        }
        self.lookup_in(Mode::Global, key)
    }

    /// Bindings of one mode, in file order.
    pub fn bindings(&self, mode: Mode) -> &[Binding] {
        self.modes.get(&mode).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The keys of `action` in `mode` (falling back to global), as shown in hints: `j/down`.
    pub fn keys_label(&self, mode: Mode, action: &Action) -> Option<String> {
        let find = |m: Mode| {
            self.bindings(m)
                .iter()
                .find(|b| &b.action == action && !b.keys.is_empty())
                .map(|b| {
                    b.keys
                        .iter()
                        .map(KeyChord::to_string)
                        .collect::<Vec<_>>()
                        .join("/")
                })
        };
        find(mode).or_else(|| find(Mode::Global))
    }

    /// The first key of `action` (for compact hints).
    pub fn first_key(&self, mode: Mode, action: &Action) -> Option<String> {
        let find = |m: Mode| {
            self.bindings(m)
                .iter()
                .find(|b| &b.action == action)
                .and_then(|b| b.keys.first())
                .map(KeyChord::to_string)
        };
        find(mode).or_else(|| find(Mode::Global))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_strings_round_trip() {
        for text in [
            "ctrl+r",
            "shift+tab",
            "space",
            "G",
            "+",
            "enter",
            "f5",
            "alt+x",
        ] {
            assert_eq!(KeyChord::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            KeyChord::parse("shift+g").unwrap(),
            KeyChord::parse("G").unwrap()
        );
        assert!(KeyChord::parse("hyper+x").is_err());
        assert!(KeyChord::parse("banana").is_err());
    }

    #[test]
    fn events_normalize_like_strings() {
        let ev = KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT);
        assert_eq!(KeyChord::from_event(&ev), KeyChord::parse("G").unwrap());
        let ev = KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT);
        assert_eq!(
            KeyChord::from_event(&ev),
            KeyChord::parse("shift+tab").unwrap()
        );
    }
}
