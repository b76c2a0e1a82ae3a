//! Writes RFC 5322 / MIME text for scenario messages that do not bring their own.

use super::state::MessageContent;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Renders the full message: headers (with encoded words where needed), a text part, an optional
/// HTML alternative, and base64 attachments.
pub fn render(
    m: &MessageContent,
    html: Option<&str>,
    extra_headers: &[(String, String)],
) -> String {
    let mut out = String::new();
    let boundary = format!(
        "=_clawback_{}",
        &hex::encode(Sha256::digest(m.internet_message_id.as_bytes()))[..16]
    );
    push_header(&mut out, "Message-ID", &m.internet_message_id);
    push_header(&mut out, "Date", &m.date.to_rfc2822());
    push_header(
        &mut out,
        "From",
        &format!("{} <{}>", encode_word(&m.from_name), m.from),
    );
    if !m.to.is_empty() {
        push_header(&mut out, "To", &m.to.join(", "));
    }
    if !m.cc.is_empty() {
        push_header(&mut out, "Cc", &m.cc.join(", "));
    }
    push_header(&mut out, "Subject", &encode_word(&m.subject));
    if let Some(r) = &m.in_reply_to {
        push_header(&mut out, "In-Reply-To", r);
    }
    if !m.references.is_empty() {
        push_header(&mut out, "References", &m.references.join(" "));
    }
    push_header(
        &mut out,
        "Thread-Index",
        &thread_index(&m.conversation_key, m.references.len()),
    );
    push_header(
        &mut out,
        "Thread-Topic",
        &encode_word(strip_prefixes(&m.subject)),
    );
    for (name, value) in extra_headers {
        push_header(&mut out, name, value);
    }
    push_header(&mut out, "MIME-Version", "1.0");
    let text_part = |out: &mut String| {
        out.push_str(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        );
        out.push_str(&crlf(&m.body_text));
        out.push_str("\r\n");
    };
    if m.attachments.is_empty() && html.is_none() {
        out.push_str(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        );
        out.push_str(&crlf(&m.body_text));
        out.push_str("\r\n");
        return out;
    }
    let outer = if m.attachments.is_empty() {
        "alternative"
    } else {
        "mixed"
    };
    out.push_str(&format!(
        "Content-Type: multipart/{outer}; boundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str("This is a multi-part message in MIME format.\r\n");
    if m.attachments.is_empty() {
        out.push_str(&format!("--{boundary}\r\n"));
        text_part(&mut out);
        if let Some(h) = html {
            out.push_str(&format!(
                "--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{}\r\n",
                crlf(h)
            ));
        }
    } else {
        out.push_str(&format!("--{boundary}\r\n"));
        match html {
            Some(h) => {
                let alt = format!("{boundary}_alt");
                out.push_str(&format!(
                    "Content-Type: multipart/alternative; boundary=\"{alt}\"\r\n\r\n--{alt}\r\n"
                ));
                text_part(&mut out);
                out.push_str(&format!(
                    "--{alt}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{}\r\n--{alt}--\r\n",
                    crlf(h)
                ));
            }
            None => text_part(&mut out),
        }
        for a in &m.attachments {
            out.push_str(&format!(
                "--{boundary}\r\nContent-Type: {}; name=\"{}\"\r\nContent-Disposition: attachment; filename=\"{}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                a.content_type, a.name, a.name
            ));
            let b64 = base64::engine::general_purpose::STANDARD.encode(&a.bytes);
            for chunk in b64.as_bytes().chunks(76) {
                out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                out.push_str("\r\n");
            }
        }
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

fn push_header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// RFC 2047 encoded word for non-ASCII header text.
pub fn encode_word(text: &str) -> String {
    if text.is_ascii() {
        text.to_string()
    } else {
        format!(
            "=?utf-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

fn strip_prefixes(subject: &str) -> &str {
    let mut s = subject.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        if let Some(p) = ["re:", "fw:", "fwd:"]
            .iter()
            .find(|p| lower.starts_with(**p))
        {
            s = s[p.len()..].trim_start();
        } else {
            return s;
        }
    }
}

/// Outlook-style Thread-Index: a 22-byte header block for the conversation plus a 5-byte child
/// block per reply level.
pub fn thread_index(conversation_key: &str, depth: usize) -> String {
    let root = Sha256::digest(conversation_key.as_bytes());
    let mut bytes = root[..22].to_vec();
    for level in 0..depth {
        let child = Sha256::digest(format!("{conversation_key}/{level}").as_bytes());
        bytes.extend_from_slice(&child[..5]);
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
