//! SIGINT/SIGTERM become a clean shutdown. The signals are blocked in every thread and taken
//! by one thread with `sigwait`, so nothing runs inside a signal handler. A server ignores
//! SIGHUP, as Redis does (`ignore_hangup`): a closed terminal does not stop it.
use std::sync::atomic::{AtomicBool, Ordering};

/// Blocks SIGINT and SIGTERM in this thread and every thread it starts afterwards.
pub fn block() {
    // SAFETY: plain libc signal-mask calls on a local, initialised sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for the next SIGINT or SIGTERM (they must be blocked, see `block`); `None` if
/// sigwait failed.
pub fn wait_one() -> Option<i32> {
    let mut sig: libc::c_int = 0;
    // SAFETY: plain libc calls on a local, initialised sigset; sigwait writes the signal
    // number into `sig`.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigwait(&set, &mut sig)
    };
    (rc == 0).then_some(sig)
}

/// SIGHUP does nothing from here on (in children too: the disposition survives `exec`).
pub fn ignore_hangup() {
    // SAFETY: setting a signal's disposition to SIG_IGN runs no code of ours.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Calls `on_first` on the first SIGINT/SIGTERM. While the shutdown runs, a second SIGINT
/// (Ctrl-C again) exits at once; another SIGTERM is only logged, as in Redis: process
/// managers and `timeout` may send SIGTERM to the process and to its group alike, and that
/// must not cut the clean shutdown short.
pub fn spawn_waiter(on_first: impl Fn() + Send + 'static) {
    static SEEN: AtomicBool = AtomicBool::new(false);
    let _ = std::thread::Builder::new()
        .name("skv-signals".into())
        .spawn(move || {
            loop {
                let Some(sig) = wait_one() else {
                    continue;
                };
                if SEEN.swap(true, Ordering::SeqCst) {
                    if sig == libc::SIGINT {
                        log::error!("second SIGINT: exiting without a clean shutdown");
                        std::process::exit(130);
                    }
                    log::warn!("signal {sig} while shutting down: ignored (SIGINT exits at once)");
                    continue;
                }
                log::warn!("signal {sig}: shutting down (SIGINT again to exit at once)");
                on_first();
            }
        });
}
