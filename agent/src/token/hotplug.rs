//! PC/SC hot-plug: a thread that waits on `SCardGetStatusChange` for every reader (and
//! the PnP pseudo-reader, for readers plugged in or out) and tells the PIV stores when
//! a card leaves or enters the reader they use. A removed card's sessions and cached
//! PIN are dropped at once, not at the next request.

use std::ffi::CString;
use std::sync::Arc;
use std::time::Duration;

use pcsc::{Context, ReaderState, Scope, State, PNP_NOTIFICATION};
use tracing::{debug, info};

use super::piv::{PivStore, READER_EPOCH, WATCHING};
use std::sync::atomic::Ordering;

/// How long one wait lasts before the reader list is refreshed anyway.
const WAIT: Duration = Duration::from_secs(5);

/// Starts the watcher thread for these cards. It runs for the life of the process and
/// survives pcscd restarts (it reconnects every few seconds).
pub fn spawn(cards: Vec<Arc<PivStore>>) {
    let spawned = std::thread::Builder::new()
        .name("pcsc-hotplug".into())
        .spawn(move || loop {
            match Context::establish(Scope::User) {
                Ok(ctx) => {
                    if let Err(e) = watch(&ctx, &cards) {
                        debug!("PC/SC watcher: {e}; reconnecting");
                    }
                }
                Err(e) => debug!("PC/SC not available ({e}); retrying"),
            }
            // Not watching: stores look for absent cards at every use meanwhile.
            WATCHING.store(false, Ordering::SeqCst);
            READER_EPOCH.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(2));
        });
    if let Err(e) = spawned {
        tracing::warn!(
            "cannot start the card watcher ({e}): removal is noticed at the next request only"
        );
    }
}

fn present(state: State) -> bool {
    state.contains(State::PRESENT) && !state.contains(State::MUTE)
}

fn watch(ctx: &Context, cards: &[Arc<PivStore>]) -> Result<(), pcsc::Error> {
    loop {
        let names: Vec<CString> = match ctx.list_readers_owned() {
            Ok(n) => n,
            Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut states: Vec<ReaderState> = names
            .iter()
            .map(|n| ReaderState::new(n.clone(), State::UNAWARE))
            .collect();
        states.push(ReaderState::new(PNP_NOTIFICATION(), State::UNAWARE));
        // First call: learn the current state of every reader.
        ctx.get_status_change(Duration::from_millis(0), &mut states)
            .or_else(|e| match e {
                pcsc::Error::Timeout => Ok(()),
                e => Err(e),
            })?;
        for rs in &states[..states.len() - 1] {
            let name = rs.name().to_string_lossy();
            let p = present(rs.event_state());
            for c in cards {
                c.reader_event(&name, p);
            }
        }
        for rs in &mut states {
            rs.sync_current_state();
        }
        READER_EPOCH.fetch_add(1, Ordering::SeqCst);
        WATCHING.store(true, Ordering::SeqCst);
        // Then wait for changes until the reader list itself changes.
        loop {
            match ctx.get_status_change(WAIT, &mut states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => continue,
                Err(e) => return Err(e),
            }
            let mut relist = false;
            // Something changed: absent cards are worth looking for again.
            READER_EPOCH.fetch_add(1, Ordering::SeqCst);
            for rs in &states {
                let ev = rs.event_state();
                if !ev.contains(State::CHANGED) {
                    continue;
                }
                if rs.name() == PNP_NOTIFICATION() {
                    relist = true;
                    continue;
                }
                let name = rs.name().to_string_lossy();
                let gone = ev.intersects(State::UNKNOWN | State::UNAVAILABLE | State::IGNORE);
                let p = !gone && present(ev);
                info!(reader = %name, present = p, "reader state changed");
                for c in cards {
                    c.reader_event(&name, p);
                }
                if gone {
                    relist = true;
                }
            }
            for rs in &mut states {
                rs.sync_current_state();
            }
            if relist {
                break;
            }
        }
    }
}
