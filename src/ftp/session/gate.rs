//! What a command must pass before it runs, decided from the command and the session's login
//! alone: logged in (but for the few commands allowed before), a path without control bytes or
//! the reserved upload names, the permission the command needs, and what the storage can do.

use crate::ftp::access::{Permission, Permissions};
use crate::ftp::command::Command;
use crate::ftp::fs;
use crate::ftp::storage::Capabilities;

/// A command refused before it runs: the reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: u16,
    pub text: String,
}

fn refuse(code: u16, text: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        code,
        text: text.into(),
    })
}

/// The checks before any session state changes: login, and the path's bytes and name.
pub(super) fn admit(command: &Command, logged_in: bool) -> Result<(), Refusal> {
    let allowed_before_login = matches!(
        command,
        Command::User(_)
            | Command::Pass(_)
            | Command::Auth
            | Command::Pbsz(_)
            | Command::Prot(_)
            | Command::Feat
            | Command::Syst
            | Command::Quit
            | Command::Noop
            | Command::Help
            | Command::OptsUtf8(_)
            | Command::OptsMlst(_)
            | Command::Abor
            | Command::Host(_)
    );
    if !allowed_before_login && !logged_in {
        return refuse(530, "Please login with USER and PASS.");
    }
    if command.path().is_some_and(fs::has_control_bytes) {
        return refuse(
            553,
            "File name not allowed: it contains control characters.",
        );
    }
    if command.path().is_some_and(fs::names_upload_temp) {
        let creates = matches!(
            command,
            Command::Stor(_) | Command::Appe(_) | Command::Mkd(_) | Command::Rnto(_)
        );
        return if creates {
            refuse(
                553,
                "File name not allowed: reserved for uploads in progress.",
            )
        } else {
            // Another session's upload in progress is not there yet, as far as anyone can see.
            refuse(550, "No such file or directory.")
        };
    }
    Ok(())
}

/// The permission check, after `REST` and `RNFR` state has been consumed.
pub(super) fn permitted(command: &Command, permissions: Permissions) -> Result<(), Refusal> {
    match required_permission(command) {
        Some(permission) if !permissions.allows(permission) => refuse(
            550,
            format!(
                "Permission denied: this login may not {}.",
                permission.name()
            ),
        ),
        _ => Ok(()),
    }
}

/// The check against what the storage can do, after the permission check: what it cannot do is
/// refused before anything is opened, never served as something else (an `APPE` that overwrites).
/// 502 (not implemented) for a command the storage cannot serve at all, 504 (not implemented for
/// that parameter) for a transfer it can serve only from the start.
pub(super) fn supported(
    command: &Command,
    restart_offset: u64,
    capabilities: Capabilities,
) -> Result<(), Refusal> {
    match command {
        Command::Appe(_) if !capabilities.append => refuse(
            502,
            "APPE is not available: this server's storage cannot append to a file; upload the whole file with STOR.",
        ),
        Command::Rest(offset)
            if *offset > 0 && !capabilities.resume_upload && !capabilities.resume_download =>
        {
            refuse(
                502,
                "REST is not available: this server's storage cannot restart transfers; transfer the whole file.",
            )
        }
        Command::Stor(_) if restart_offset > 0 && !capabilities.resume_upload => refuse(
            504,
            "STOR after REST is not available: this server's storage cannot resume an upload; upload the whole file.",
        ),
        Command::Retr(_) if restart_offset > 0 && !capabilities.resume_download => refuse(
            504,
            "RETR after REST is not available: this server's storage cannot read from an offset; download the whole file.",
        ),
        Command::Mfmt(..) if !capabilities.set_mtime => refuse(
            502,
            "MFMT is not available: this server's storage cannot set modification times.",
        ),
        Command::SiteChmod(..) if !capabilities.chmod => refuse(
            502,
            "SITE CHMOD is not available: this server's storage has no permission bits.",
        ),
        _ => Ok(()),
    }
}

/// The permission a command needs beyond being logged in.
fn required_permission(command: &Command) -> Option<Permission> {
    Some(match command {
        Command::List(_)
        | Command::Nlst(_)
        | Command::Mlsd(_)
        | Command::Mlst(_)
        | Command::Stat(Some(_))
        | Command::Size(_)
        | Command::Mdtm(_) => Permission::List,
        Command::Retr(_) => Permission::Download,
        // Changing a file's time or mode is writing to the tree, as an upload is.
        Command::Stor(_)
        | Command::Appe(_)
        | Command::Stou
        | Command::Mfmt(..)
        | Command::SiteChmod(..) => Permission::Upload,
        Command::Dele(_) | Command::Rmd(_) => Permission::Delete,
        Command::Rnfr(_) => Permission::Rename,
        Command::Mkd(_) => Permission::Mkdir,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ftp::command;

    fn parse(line: &str) -> Command {
        command::parse(line.as_bytes()).unwrap()
    }

    fn code(result: Result<(), Refusal>) -> Option<u16> {
        result.err().map(|refusal| refusal.code)
    }

    #[test]
    fn only_login_tls_and_harmless_commands_pass_before_login() {
        for line in [
            "USER alice",
            "PASS x",
            "AUTH TLS",
            "FEAT",
            "QUIT",
            "NOOP",
            "HOST a",
        ] {
            assert_eq!(code(admit(&parse(line), false)), None, "{line}");
        }
        for line in [
            "LIST", "RETR a", "STOR a", "CWD /", "PWD", "PASV", "DELE a", "SIZE a",
        ] {
            assert_eq!(code(admit(&parse(line), false)), Some(530), "{line}");
            assert_eq!(code(admit(&parse(line), true)), None, "{line}");
        }
    }

    #[test]
    fn reserved_upload_names_cannot_be_made_and_are_not_there() {
        let temp = format!("dir/{}1", fs::UPLOAD_TEMP_PREFIX);
        assert_eq!(
            code(admit(&parse(&format!("STOR {temp}")), true)),
            Some(553)
        );
        assert_eq!(
            code(admit(&parse(&format!("RETR {temp}")), true)),
            Some(550)
        );
    }

    #[test]
    fn permissions_follow_the_command() {
        let read_only = Permissions::read_only();
        assert_eq!(code(permitted(&parse("RETR a"), read_only)), None);
        assert_eq!(code(permitted(&parse("LIST"), read_only)), None);
        for line in [
            "STOR a", "APPE a", "DELE a", "RNFR a", "MKD a", "RMD a", "STOU",
        ] {
            assert_eq!(
                code(permitted(&parse(line), read_only)),
                Some(550),
                "{line}"
            );
        }
        let incoming = Permissions::incoming();
        assert_eq!(code(permitted(&parse("STOR a"), incoming)), None);
        assert_eq!(code(permitted(&parse("RETR a"), incoming)), Some(550));
        assert_eq!(code(permitted(&parse("PWD"), Permissions::NONE)), None);
    }

    #[test]
    fn what_the_storage_cannot_do_is_refused_and_the_rest_passes() {
        let none = Capabilities {
            append: false,
            resume_upload: false,
            resume_download: false,
            atomic_rename: false,
            chmod: false,
            set_mtime: false,
            zero_copy: false,
        };
        let all = Capabilities::ALL;
        for (line, offset, refused) in [
            ("APPE a", 0, Some(502)),
            ("REST 10", 0, Some(502)),
            ("STOR a", 10, Some(504)),
            ("RETR a", 10, Some(504)),
            ("MFMT 20260101000000 a", 0, Some(502)),
            ("SITE CHMOD 644 a", 0, Some(502)),
            ("REST 0", 0, None),
            ("STOR a", 0, None),
            ("RETR a", 0, None),
            ("STOU", 0, None),
            ("RNFR a", 0, None),
            ("DELE a", 0, None),
        ] {
            let command = parse(line);
            assert_eq!(code(supported(&command, offset, none)), refused, "{line}");
            assert_eq!(code(supported(&command, offset, all)), None, "{line}");
        }
        // Ranged reads alone: REST is accepted, for RETR, and refused at STOR.
        let ranged = Capabilities {
            resume_download: true,
            ..none
        };
        assert_eq!(code(supported(&parse("REST 10"), 0, ranged)), None);
        assert_eq!(code(supported(&parse("RETR a"), 10, ranged)), None);
        assert_eq!(code(supported(&parse("STOR a"), 10, ranged)), Some(504));
    }
}
