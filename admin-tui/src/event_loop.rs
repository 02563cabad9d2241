//! The console's event loop: terminal input, the feed, the requests and the frames.

use std::io;
use std::time::{Duration, Instant};

use crossterm::event;
use ratatui::DefaultTerminal;
use tokio::runtime::Handle;
use tokio::sync::mpsc::{self, error::TryRecvError};

use crate::app::App;
use crate::client::AdminClient;
use crate::feed::{FeedUpdate, LinkState};
use crate::requests::{Response, execute};

/// Longest wait for input before the loop looks at the feed and the answers again, which
/// bounds how late a snapshot reaches the screen.
const INPUT_WAIT: Duration = Duration::from_millis(50);

/// Period of the frames drawn without a change, which move the countdowns and ages on
/// screen. Other frames are drawn only after a change, and ratatui then writes only the
/// cells that differ from the previous frame, so the screen does not flicker.
const TICK: Duration = Duration::from_secs(1);

/// Capacity of the channel of answers; request tasks wait when it is full.
const RESPONSE_CAPACITY: usize = 64;

/// Runs the console until the operator quits. Requests run as tasks on `runtime`.
pub fn run(
    mut app: App,
    terminal: &mut DefaultTerminal,
    mut feed: mpsc::Receiver<FeedUpdate>,
    client: &AdminClient,
    runtime: &Handle,
) -> io::Result<()> {
    let size = terminal.size()?;
    app.handle_event(&event::Event::Resize(size.width, size.height));
    let (responses_sender, mut responses) = mpsc::channel::<Response>(RESPONSE_CAPACITY);
    let mut dirty = true;
    let mut last_frame: Option<Instant> = None;

    while !app.should_quit() {
        // The clock moves first, so that a snapshot is stamped with the time it arrived.
        let now = Instant::now();
        app.tick(now);
        dirty |= drain_feed(&mut app, &mut feed);
        while let Ok(response) = responses.try_recv() {
            app.apply_response(response);
            dirty = true;
        }

        for request in app.take_requests() {
            let client = client.clone();
            let sender = responses_sender.clone();
            runtime.spawn(async move {
                let response = execute(&client, request).await;
                // The console is gone when sending fails, and nobody needs the answer.
                let _ = sender.send(response).await;
            });
        }

        if dirty || last_frame.is_none_or(|at| now.duration_since(at) >= TICK) {
            terminal.draw(|frame| app.render(frame))?;
            last_frame = Some(now);
            dirty = false;
        }

        if event::poll(INPUT_WAIT)? {
            // Drain every queued event before the next frame, so that a held key or a pasted
            // filter does not draw one frame per character.
            loop {
                app.handle_event(&event::read()?);
                if app.should_quit() || !event::poll(Duration::ZERO)? {
                    break;
                }
            }
            dirty = true;
        }
    }
    Ok(())
}

/// Applies every queued feed message and returns whether there was any.
fn drain_feed(app: &mut App, feed: &mut mpsc::Receiver<FeedUpdate>) -> bool {
    let mut changed = false;
    loop {
        match feed.try_recv() {
            Ok(update) => {
                app.apply_feed(update);
                changed = true;
            }
            Err(TryRecvError::Empty) => return changed,
            Err(TryRecvError::Disconnected) => {
                // The feed ends only if its task panicked. Nothing will update the figures
                // again, so the link line says so instead of showing them as current.
                let reason = "the feed task stopped, so nothing updates: restart the console";
                let stopped = LinkState::Stopped { reason: reason.to_owned() };
                if *app.link() != stopped {
                    app.apply_feed(FeedUpdate::Link(stopped));
                    changed = true;
                }
                return changed;
            }
        }
    }
}
