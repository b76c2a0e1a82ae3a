//! The headless console wired to a real engine task: key presses in, engine events folded into
//! the app (and the commands it answers with sent back), as `tui::run` does without a terminal.

use super::{press, type_text};
use clawback::config::Config;
use clawback::engine::{Command, EngineHandle};
use clawback::tui::action::Action;
use clawback::tui::app::{App, Loadable};
use clawback::tui::{TuiOptions, prepare};
use std::time::{Duration, Instant};

pub struct Console {
    pub app: App,
    pub engine: EngineHandle,
}

impl Console {
    /// The console on `engine` as `tui::run` starts it: the app for `config`, its start-up
    /// commands sent, and the first search answered.
    pub async fn open(config: &Config, engine: EngineHandle) -> Console {
        let (app, _theme) = prepare(config, &TuiOptions::default()).unwrap();
        let mut console = Console { app, engine };
        let startup = console.app.startup();
        console.send(startup);
        console
            .until("the first results", |a| a.search.results.ready().is_some())
            .await;
        console
    }

    pub fn send(&self, commands: Vec<Command>) {
        for c in commands {
            self.engine.commands.send(c).unwrap();
        }
    }

    /// Enter on the selected search row, and its recipients loaded.
    pub async fn open_selected_message(&mut self) {
        self.keys(&["enter"]);
        self.until("the recipients", |a| {
            matches!(a.recipients.rows, Loadable::Ready(_))
        })
        .await;
    }

    pub fn keys(&mut self, keys: &[&str]) {
        for k in keys {
            let commands = self.app.handle_key(press(k));
            self.send(commands);
        }
    }

    pub fn type_text(&mut self, text: &str) {
        let commands = type_text(&mut self.app, text);
        self.send(commands);
    }

    /// Feeds engine events and ticks into the app until `done` holds (or fails after 60 s).
    pub async fn until(&mut self, what: &str, done: impl Fn(&App) -> bool) {
        self.until_within(what, Duration::from_secs(60), done).await
    }

    /// [`Console::until`] with its own deadline.
    pub async fn until_within(&mut self, what: &str, limit: Duration, done: impl Fn(&App) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.app) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            match tokio::time::timeout(Duration::from_millis(50), self.engine.events.recv()).await {
                Ok(Some(event)) => {
                    let commands = self.app.on_engine(event);
                    self.send(commands);
                }
                Ok(None) => panic!("the engine stopped while waiting for {what}"),
                Err(_) => {
                    let commands = self.app.update(Action::Tick);
                    self.send(commands);
                }
            }
        }
    }
}
