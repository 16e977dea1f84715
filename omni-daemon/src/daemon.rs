//! Detaching into the background, as wireguard-go does unless told to stay
//! in the foreground: the parent returns once the interface and the UAPI
//! socket exist (so `wg-quick` can go on configuring it), the child carries on.

use std::fs::OpenOptions;
use std::io;

use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid, ForkResult};

/// Threads of this process (from /proc).
fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Forks; the parent exits 0, the child starts a new session with its
/// standard streams on /dev/null (stderr kept if `keep_stderr`, for logs).
pub fn detach(keep_stderr: bool) -> io::Result<()> {
    if thread_count()? != 1 {
        return Err(io::Error::other("cannot detach: the process already has threads"));
    }
    // SAFETY: the process is single-threaded (checked above), so the child
    // inherits no lock held by another thread and may run any code.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid()?;
    let null = OpenOptions::new().read(true).write(true).open("/dev/null")?;
    dup2_stdin(&null)?;
    dup2_stdout(&null)?;
    if !keep_stderr {
        dup2_stderr(&null)?;
    }
    std::env::set_current_dir("/")?;
    Ok(())
}
