//! This machine's device id for each user, kept in the config dir
//! (`$XDG_CONFIG_HOME/chat/device-<user>`, else `~/.config/chat/…`), so
//! every `chat connect` of a user here is one device to the server: what
//! it missed while closed is replayed, even what the user read elsewhere.

use chat_core::ids::{DeviceId, UserId};
use std::path::PathBuf;

/// Where the ids are kept, if there is a home.
fn dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("chat"))
}

/// The device id of `user` on this machine: the one kept, or a new one,
/// kept from now on. Without a writable config dir, a new one for this run
/// (said once on stderr: the server then sees a new device each run).
pub fn for_user(user: &UserId) -> DeviceId {
    kept_in(dir(), user)
}

/// As [`for_user`], with the ids kept in `dir`.
fn kept_in(dir: Option<PathBuf>, user: &UserId) -> DeviceId {
    let path = dir.map(|d| d.join(format!("device-{user}")));
    if let Some(kept) = path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| DeviceId::parse(s.trim()).ok())
    {
        return kept;
    }
    let fresh = new_id();
    let saved = path.as_ref().is_some_and(|p| {
        p.parent()
            .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
            && std::fs::write(p, fresh.as_str()).is_ok()
    });
    if !saved {
        eprintln!(
            "chat: cannot keep a device id in {}; this run is a new device ({fresh})",
            path.map_or("the config dir (no HOME)".into(), |p| p
                .display()
                .to_string())
        );
    }
    fresh
}

/// A fresh id from the clock and the process id, as fresh message ids are
/// made (`cli-<hex>-1`, under 40 characters of the device id alphabet).
fn new_id() -> DeviceId {
    let id = crate::outgoing::MsgIds::from_clock().fresh();
    DeviceId::parse(&id).expect("hex digits, `cli-` and `-` make a valid device id")
}

/// `url` with `?device=` (or `&device=`) added.
pub fn url_with(url: &str, device: &DeviceId) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}device={device}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_id_is_kept_per_user_and_goes_into_the_url() {
        let home = std::env::temp_dir().join(format!("chat-cli-device-{}", std::process::id()));
        let dir = Some(home.join("chat"));
        let alice = UserId::parse("alice").unwrap();
        let first = kept_in(dir.clone(), &alice);
        assert_eq!(kept_in(dir.clone(), &alice), first, "kept");
        assert_ne!(kept_in(dir, &UserId::parse("bob").unwrap()), first);
        assert!(home.join("chat/device-alice").exists());
        assert_eq!(
            url_with("ws://h/ws", &first),
            format!("ws://h/ws?device={first}")
        );
        assert_eq!(
            url_with("ws://h/ws?x=1", &first),
            format!("ws://h/ws?x=1&device={first}")
        );
        let _ = std::fs::remove_dir_all(home);
    }
}
