//! Typed lines: what the user means ([`Command`]) and the frame it becomes
//! (a [`ClientFrame`], or a raw JSON object as typed).
//!
//! Everything here is pure: the session supplies what a command needs from
//! it (the current conversation, where `/older` continues, a fresh
//! `client_msg_id`) in a [`Context`].

use crate::outgoing::Outgoing;
use chat_core::ids::{ConversationId, UserId};
use chat_core::protocol::{ClientFrame, MAX_HISTORY_LIMIT, MAX_TEXT_BYTES};
use serde_json::Value;

/// What `/help` prints.
pub const HELP: &str = "\
commands:
  @USER TEXT                send TEXT to USER (your direct chat with them)
  #GROUP_ID TEXT            send TEXT to a group (/convs and /group show the ids)
  /history [WHO] [N [BEFORE]]
                            the last N messages (default 50, at most 100) of WHO:
                            bob (your direct chat with bob), #GROUP_ID (a group),
                            or nothing (the conversation you last sent to or got a
                            message from); BEFORE: only messages below that id
  /older                    the page before the oldest message /history showed
  /convs                    your conversations: unread counts, group ids, and
                            who has read your newest message in each group
  /receipts [WHO]           how far each member has read WHO (as /history names
                            it; default: the current conversation), and
                            \"read by n of m\" for your newest message there
  /group NAME [USER...]     create a group with these members (you are its admin)
  /add GROUP_ID USER        add USER to a group (admins)
  /remove GROUP_ID USER     remove USER from a group (admins; anyone may leave)
  /sync                     fetch the messages you missed again
  {\"action\":...}            send a raw JSON frame (see docs/protocol.md)
  /help                     this list
  /quit                     leave (Ctrl-D too)";

const USAGE_SEND: &str = "usage: @USER TEXT or #GROUP_ID TEXT";
const USAGE_GROUP: &str = "usage: /group NAME [USER...]";
const USAGE_ADD: &str = "usage: /add GROUP_ID USER";
const USAGE_REMOVE: &str = "usage: /remove GROUP_ID USER";
const USAGE_HISTORY: &str = "usage: /history [bob | #GROUP_ID] [N [BEFORE]]";

/// What a typed line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `@bob hi` or `#g hi`; `to` is `user:bob` or `group:g`.
    Send { to: String, text: String },
    /// `/group NAME a b c`.
    CreateGroup { name: String, members: Vec<String> },
    /// `/add GROUP_ID USER`.
    AddMember { group_id: String, user_id: String },
    /// `/remove GROUP_ID USER`.
    RemoveMember { group_id: String, user_id: String },
    /// `/history [WHO] [N [BEFORE]]`; no conversation: the current one.
    History {
        conversation: Option<String>,
        limit: Option<u32>,
        before: Option<u64>,
    },
    /// `/older`: the page before the last one `/history` showed.
    Older,
    /// `/convs`.
    Conversations,
    /// `/receipts [WHO]`; no conversation: the current one.
    Receipts { conversation: Option<String> },
    /// `/sync`.
    Sync,
    /// A JSON object typed as is.
    Raw(Value),
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// Where `/older` continues: set when a `history` page is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Older {
    pub conversation_id: String,
    /// The oldest id shown, when the server said there is more below it.
    pub before: Option<u64>,
    /// The page size asked for (the server's default when `None`).
    pub limit: Option<u32>,
}

/// What a command needs from the session to become a frame.
pub struct Context<'a> {
    /// The `client_msg_id` for a send.
    pub client_msg_id: &'a str,
    /// The conversation last sent to or received from.
    pub current: Option<&'a str>,
    /// Where `/older` continues.
    pub older: Option<&'a Older>,
}

/// Parses a typed line. `Ok(None)`: an empty line. `Err`: a one-line hint.
pub fn parse(line: &str, me: &UserId) -> Result<Option<Command>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    if line.starts_with('{') {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("that is not valid JSON: {e}"))?;
        if !v.is_object() {
            return Err("a raw frame must be a JSON object".into());
        }
        return Ok(Some(Command::Raw(v)));
    }
    if let Some(rest) = line.strip_prefix('@') {
        let (user, text) = split_target(rest)?;
        UserId::parse(user).map_err(|e| e.to_string())?;
        return send(format!("user:{user}"), text).map(Some);
    }
    if let Some(rest) = line.strip_prefix('#') {
        let (group, text) = split_target(rest)?;
        return send(format!("group:{group}"), text).map(Some);
    }
    if !line.starts_with('/') {
        return Err(
            "to send, start the line with @USER or #GROUP_ID (/help lists the commands)".into(),
        );
    }
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let cmd = match name {
        "/help" | "/?" => Command::Help,
        "/quit" | "/exit" => Command::Quit,
        "/sync" => Command::Sync,
        "/convs" | "/conversations" => Command::Conversations,
        "/older" => Command::Older,
        "/group" => match args.split_first() {
            Some((name, members)) => Command::CreateGroup {
                name: String::from(*name),
                members: members.iter().map(|m| String::from(*m)).collect(),
            },
            None => return Err(USAGE_GROUP.into()),
        },
        "/add" => match args.as_slice() {
            [group_id, user_id] => Command::AddMember {
                group_id: String::from(*group_id),
                user_id: String::from(*user_id),
            },
            _ => return Err(USAGE_ADD.into()),
        },
        "/remove" => match args.as_slice() {
            [group_id, user_id] => Command::RemoveMember {
                group_id: String::from(*group_id),
                user_id: String::from(*user_id),
            },
            _ => return Err(USAGE_REMOVE.into()),
        },
        "/history" => history(&args, me)?,
        "/receipts" => match args.as_slice() {
            [] => Command::Receipts { conversation: None },
            [who] => Command::Receipts {
                conversation: Some(conversation_of(who, me)?),
            },
            _ => return Err("usage: /receipts [bob | #GROUP_ID]".into()),
        },
        other => return Err(format!("unknown command {other}: /help lists the commands")),
    };
    Ok(Some(cmd))
}

/// `bob hello there` → (`bob`, `hello there`).
fn split_target(rest: &str) -> Result<(&str, &str), String> {
    let (target, text) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| USAGE_SEND.to_string())?;
    let text = text.trim_start();
    if target.is_empty() || text.is_empty() {
        return Err(USAGE_SEND.into());
    }
    Ok((target, text))
}

fn send(to: String, text: &str) -> Result<Command, String> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "too long: {} bytes of UTF-8; a message holds at most {MAX_TEXT_BYTES}",
            text.len()
        ));
    }
    Ok(Command::Send {
        to,
        text: text.to_string(),
    })
}

fn history(args: &[&str], me: &UserId) -> Result<Command, String> {
    let (conversation, rest) = match args.split_first() {
        Some((first, tail)) if !is_number(first) => (Some(conversation_of(first, me)?), tail),
        _ => (None, args),
    };
    let (limit, before) = match rest {
        [] => (None, None),
        [n] => (Some(page_size(n)?), None),
        [n, before] => (Some(page_size(n)?), Some(message_id(before)?)),
        _ => return Err(USAGE_HISTORY.into()),
    };
    Ok(Command::History {
        conversation,
        limit,
        before,
    })
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn page_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=MAX_HISTORY_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "N is a page size from 1 to {MAX_HISTORY_LIMIT}; {USAGE_HISTORY}"
        )),
    }
}

fn message_id(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("BEFORE is a message id; {USAGE_HISTORY}"))
}

/// A conversation named the way a user knows it: `bob` or `@bob` (the
/// direct chat between `me` and bob), `#g` (group g), or an id as is
/// (`dm#a#b`, `grp#g`).
pub fn conversation_of(who: &str, me: &UserId) -> Result<String, String> {
    if who.starts_with("dm#") || who.starts_with("grp#") {
        return ConversationId::parse(who)
            .map(|c| c.to_string())
            .map_err(|e| e.to_string());
    }
    if let Some(group) = who.strip_prefix('#') {
        if group.is_empty() {
            return Err(USAGE_HISTORY.into());
        }
        return Ok(ConversationId::group(group).to_string());
    }
    let user = who.strip_prefix('@').unwrap_or(who);
    let peer = UserId::parse(user).map_err(|e| e.to_string())?;
    Ok(ConversationId::direct(me, &peer).to_string())
}

/// The conversation a send to `to` (`user:<id>` or `group:<id>`) lands in.
pub fn conversation_for_recipient(me: &UserId, to: &str) -> Option<String> {
    if let Some(group) = to.strip_prefix("group:") {
        return Some(ConversationId::group(group).to_string());
    }
    let peer = UserId::parse(to.strip_prefix("user:")?).ok()?;
    Some(ConversationId::direct(me, &peer).to_string())
}

/// The frame for `cmd`; `Ok(None)` for what stays local (`/help`, `/quit`).
pub fn to_frame(cmd: &Command, ctx: &Context<'_>) -> Result<Option<Outgoing>, String> {
    let frame = match cmd {
        Command::Send { to, text } => send_frame(to, ctx.client_msg_id, text),
        Command::CreateGroup { name, members } => ClientFrame::CreateGroup {
            name: name.clone(),
            members: members.clone(),
        },
        Command::AddMember { group_id, user_id } => ClientFrame::AddMember {
            group_id: group_id.clone(),
            user_id: user_id.clone(),
        },
        Command::RemoveMember { group_id, user_id } => ClientFrame::RemoveMember {
            group_id: group_id.clone(),
            user_id: user_id.clone(),
        },
        Command::History {
            conversation,
            limit,
            before,
        } => {
            let conversation = match (conversation, ctx.current) {
                (Some(c), _) => c.as_str(),
                (None, Some(c)) => c,
                (None, None) => {
                    return Err(
                        "no current conversation yet: /history bob or /history #GROUP_ID".into(),
                    )
                }
            };
            history_frame(conversation, *limit, *before)
        }
        Command::Older => {
            let older = ctx
                .older
                .ok_or("nothing to page back from: /history first")?;
            let before = older
                .before
                .ok_or_else(|| format!("no older messages in {}", older.conversation_id))?;
            history_frame(&older.conversation_id, older.limit, Some(before))
        }
        Command::Conversations => ClientFrame::Conversations {
            limit: None,
            cursor: None,
        },
        Command::Sync => ClientFrame::Sync {},
        Command::Receipts { conversation } => {
            let conversation_id = match (conversation, ctx.current) {
                (Some(c), _) => c.clone(),
                (None, Some(c)) => c.to_string(),
                (None, None) => {
                    return Err(
                        "no current conversation yet: /receipts bob or /receipts #GROUP_ID".into(),
                    )
                }
            };
            ClientFrame::Receipts { conversation_id }
        }
        Command::Raw(v) => return Ok(Some(Outgoing::Raw(v.clone()))),
        Command::Help | Command::Quit => return Ok(None),
    };
    Ok(Some(frame.into()))
}

/// A `send`.
pub fn send_frame(to: &str, client_msg_id: &str, text: &str) -> ClientFrame {
    ClientFrame::Send {
        to: to.to_string(),
        client_msg_id: client_msg_id.to_string(),
        text: text.to_string(),
    }
}

/// A `history` page (the server's default size when `limit` is `None`).
fn history_frame(conversation_id: &str, limit: Option<u32>, before: Option<u64>) -> ClientFrame {
    ClientFrame::History {
        conversation_id: conversation_id.to_string(),
        before,
        limit,
    }
}

/// `user:bob` / `group:g` from what a script passes: those as is, or `bob`,
/// `@bob`, `#g`.
pub fn recipient(to: &str) -> String {
    if to.contains(':') {
        to.to_string()
    } else if let Some(group) = to.strip_prefix('#') {
        format!("group:{group}")
    } else {
        format!("user:{}", to.strip_prefix('@').unwrap_or(to))
    }
}

#[cfg(test)]
mod tests;
