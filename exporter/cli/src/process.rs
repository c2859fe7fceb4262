//! Process set-up before anything runs: SIGPIPE and the Vulkan loader's runtime dir.

use std::path::Path;

/// Mesa's Vulkan drivers (which the GPU probe of `--backend auto` may load) print
/// "XDG_RUNTIME_DIR is invalid" on every start without one; give the process a private one.
pub fn quiet_vulkan_loader() {
    let valid = std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).is_dir());
    if !valid {
        let dir = std::env::temp_dir().join("flowrt-xdg");
        if std::fs::create_dir_all(&dir).is_ok() {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            }
            // Single-threaded here: nothing else reads the environment yet.
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
}

/// Rust ignores SIGPIPE, so a `println!` into a closed pipe (`flowrt inspect m.frt | head`)
/// panics; restore the default, which ends the process quietly as other command-line tools do.
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in `main`, before any other thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
