//! The users Secret of `spec.users.secretRef`: lines `name:PHC-hash[:ACCESS[:HOME]]`, read into
//! the rendered file's form. Checked as the server checks them, so a line the server would refuse
//! stalls the FtpServer here, naming the line, instead of reaching the pods.

use super::file::FileUser;
use super::passwords::argon2id_problem;

/// The users of the Secret's `users` key, or the first bad line's number and why.
pub fn parse(text: &str) -> Result<Vec<FileUser>, (usize, String)> {
    let mut users = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |reason: String| (index + 1, reason);
        // A PHC string holds no ':', so the fields are ':'-separated.
        let mut fields = line.splitn(4, ':');
        let name = fields.next().unwrap_or_default();
        let hash = fields.next().ok_or_else(|| error("no ':'".into()))?;
        if name.is_empty() {
            return Err(error("empty user name".into()));
        }
        if let Some(problem) = argon2id_problem(hash) {
            return Err(error(problem));
        }
        let access = fields.next().filter(|a| !a.is_empty()).map(str::to_owned);
        if let Some(access) = &access
            && !valid_access(access)
        {
            return Err(error(format!(
                "access {access:?} is not ro, rw, incoming or a list of \
                 list,download,upload,delete,rename,mkdir"
            )));
        }
        let home = fields.next().filter(|h| !h.is_empty()).map(str::to_owned);
        users.push(FileUser {
            name: name.to_owned(),
            password_hash: hash.to_owned(),
            access,
            home,
            ..FileUser::default()
        });
    }
    Ok(users)
}

/// `ro`, `rw`, `incoming`, or permission names joined by `,`.
pub fn valid_access(text: &str) -> bool {
    const PERMISSIONS: [&str; 6] = ["list", "download", "upload", "delete", "rename", "mkdir"];
    matches!(text, "ro" | "rw" | "incoming")
        || text
            .split(',')
            .all(|word| PERMISSIONS.contains(&word.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

    #[test]
    fn lines_of_every_form_are_read() {
        let users = parse(&format!(
            "# partners\n\nalice:{HASH}\nbob:{HASH}:ro\ncarol:{HASH}:list,download:/drop/carol\n"
        ))
        .unwrap();
        let summary: Vec<_> = users
            .iter()
            .map(|u| (u.name.as_str(), u.access.as_deref(), u.home.as_deref()))
            .collect();
        assert_eq!(
            summary,
            [
                ("alice", None, None),
                ("bob", Some("ro"), None),
                ("carol", Some("list,download"), Some("/drop/carol")),
            ]
        );
    }

    #[test]
    fn a_bad_line_is_named_with_why() {
        let (line, why) = parse(&format!("alice:{HASH}\nbob\n")).unwrap_err();
        assert_eq!((line, why.as_str()), (2, "no ':'"));
        let (line, why) = parse("alice:plain-password\n").unwrap_err();
        assert_eq!(line, 1);
        assert!(why.contains("not an argon2id PHC hash"), "{why}");
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$Jm+2QNw8yA4ZqS9o4ONIfQ";
        let (_, why) = parse(&format!("alice:{argon2i}\n")).unwrap_err();
        assert!(why.contains("argon2i is not argon2id"), "{why}");
        let (_, why) = parse(&format!("alice:{HASH}:write\n")).unwrap_err();
        assert!(why.contains("access \"write\""), "{why}");
        let (_, why) = parse(&format!(":{HASH}\n")).unwrap_err();
        assert_eq!(why, "empty user name");
        // Base64 whose unused bits are not zero: the server's parser refuses it too.
        let loose = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$k7N7r0d2H1n5c3q4l8y6g5m2h1j0k9l8m7n6b5v4c3x";
        assert!(parse(&format!("alice:{loose}\n")).is_err());
        assert!(crate::ftp::auth::Users::parse(&format!("alice:{loose}\n")).is_err());
    }
}
