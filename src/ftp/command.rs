//! The control-connection command parser: bytes of one line in, a [`Command`] or the reply that
//! explains what is wrong out. Pure, so it is property-tested.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

/// One parsed command line (RFC 959, 2228, 2389, 2428, 3659).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    User(String),
    Pass(String),
    Acct,
    Cwd(String),
    Cdup,
    Pwd,
    Quit,
    Noop,
    Syst,
    Type(TransferType),
    Stru,
    Mode,
    List(Option<String>),
    Nlst(Option<String>),
    Mlsd(Option<String>),
    Mlst(Option<String>),
    Retr(String),
    Stor(String),
    Stou,
    Appe(String),
    Rest(u64),
    Rnfr(String),
    Rnto(String),
    Dele(String),
    Mkd(String),
    Rmd(String),
    Abor,
    Stat(Option<String>),
    Help,
    Pasv,
    Epsv(EpsvArg),
    Port(SocketAddr),
    Eprt(SocketAddr),
    Auth,
    Pbsz(u64),
    Prot(Protection),
    Ccc,
    Feat,
    OptsUtf8(bool),
    OptsMlst(String),
    Size(String),
    Mdtm(String),
    Allo,
    /// RFC 7151: the virtual host the client wants, before login.
    Host(String),
    /// Set a file's modification time: seconds since the epoch (UTC), path.
    Mfmt(i64, String),
    /// `SITE CHMOD mode path`: permission bits only.
    SiteChmod(u32, String),
}

impl Command {
    /// The path a command names, if it names one (for checks every path must pass).
    pub fn path(&self) -> Option<&str> {
        match self {
            Command::Cwd(path)
            | Command::Retr(path)
            | Command::Stor(path)
            | Command::Appe(path)
            | Command::Rnfr(path)
            | Command::Rnto(path)
            | Command::Dele(path)
            | Command::Mkd(path)
            | Command::Rmd(path)
            | Command::Size(path)
            | Command::Mdtm(path)
            | Command::Mfmt(_, path)
            | Command::SiteChmod(_, path) => Some(path),
            Command::List(path)
            | Command::Nlst(path)
            | Command::Mlsd(path)
            | Command::Mlst(path)
            | Command::Stat(path) => path.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferType {
    Ascii,
    Image,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvArg {
    Any,
    Ipv4,
    Ipv6,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    Clear,
    Private,
}

/// Why a line is not a command we run, with the reply code that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("500 Unknown command.")]
    Unknown,
    #[error("500 Command line is not valid UTF-8.")]
    NotUtf8,
    #[error("501 {0}")]
    BadArgument(&'static str),
    #[error("504 {0}")]
    UnsupportedParameter(&'static str),
}

impl ParseError {
    pub fn code(&self) -> u16 {
        match self {
            ParseError::Unknown | ParseError::NotUtf8 => 500,
            ParseError::BadArgument(_) => 501,
            ParseError::UnsupportedParameter(_) => 504,
        }
    }

    pub fn text(&self) -> String {
        let full = self.to_string();
        full.get(4..).unwrap_or_default().to_owned()
    }
}

/// Parses one command line; the trailing CRLF (or LF) may be present.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = strip_telnet(line);
    let line = std::str::from_utf8(&line).map_err(|_| ParseError::NotUtf8)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (verb, arg) = match line.split_once(' ') {
        Some((verb, arg)) => (verb, arg),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let optional = || (!arg.trim().is_empty()).then(|| arg.to_owned());
    let required = |what: &'static str| {
        if arg.is_empty() {
            Err(ParseError::BadArgument(what))
        } else {
            Ok(arg.to_owned())
        }
    };
    let none = |command: Command| {
        if arg.trim().is_empty() {
            Ok(command)
        } else {
            Err(ParseError::BadArgument("This command takes no argument."))
        }
    };
    Ok(match verb.as_str() {
        "USER" => Command::User(required("USER needs a user name.")?),
        "PASS" => Command::Pass(arg.to_owned()),
        "ACCT" => Command::Acct,
        "CWD" | "XCWD" => Command::Cwd(required("CWD needs a directory.")?),
        "CDUP" | "XCUP" => none(Command::Cdup)?,
        "PWD" | "XPWD" => none(Command::Pwd)?,
        "QUIT" => Command::Quit,
        "NOOP" => Command::Noop,
        "SYST" => Command::Syst,
        "TYPE" => Command::Type(parse_type(arg)?),
        "STRU" => match arg.trim().to_ascii_uppercase().as_str() {
            "F" => Command::Stru,
            "" => return Err(ParseError::BadArgument("STRU needs a structure.")),
            _ => {
                return Err(ParseError::UnsupportedParameter(
                    "Only STRU F is supported.",
                ));
            }
        },
        "MODE" => match arg.trim().to_ascii_uppercase().as_str() {
            "S" => Command::Mode,
            "" => return Err(ParseError::BadArgument("MODE needs a mode.")),
            _ => {
                return Err(ParseError::UnsupportedParameter(
                    "Only MODE S is supported.",
                ));
            }
        },
        "LIST" => Command::List(strip_list_options(arg)),
        "NLST" => Command::Nlst(strip_list_options(arg)),
        "MLSD" => Command::Mlsd(optional()),
        "MLST" => Command::Mlst(optional()),
        "RETR" => Command::Retr(required("RETR needs a file name.")?),
        "STOR" => Command::Stor(required("STOR needs a file name.")?),
        "STOU" => Command::Stou,
        "APPE" => Command::Appe(required("APPE needs a file name.")?),
        "REST" => Command::Rest(
            arg.trim()
                .parse()
                .map_err(|_| ParseError::BadArgument("REST needs a byte offset."))?,
        ),
        "RNFR" => Command::Rnfr(required("RNFR needs a path.")?),
        "RNTO" => Command::Rnto(required("RNTO needs a path.")?),
        "DELE" => Command::Dele(required("DELE needs a file name.")?),
        "MKD" | "XMKD" => Command::Mkd(required("MKD needs a directory name.")?),
        "RMD" | "XRMD" => Command::Rmd(required("RMD needs a directory name.")?),
        "ABOR" => Command::Abor,
        "STAT" => Command::Stat(optional()),
        "HELP" => Command::Help,
        "PASV" => Command::Pasv,
        "EPSV" => Command::Epsv(match arg.trim().to_ascii_uppercase().as_str() {
            "" => EpsvArg::Any,
            "1" => EpsvArg::Ipv4,
            "2" => EpsvArg::Ipv6,
            "ALL" => EpsvArg::All,
            _ => return Err(ParseError::BadArgument("EPSV takes 1, 2 or ALL.")),
        }),
        "PORT" => Command::Port(parse_port(arg)?),
        "EPRT" => Command::Eprt(parse_eprt(arg)?),
        "AUTH" => match arg.trim().to_ascii_uppercase().as_str() {
            "TLS" | "TLS-C" | "SSL" => Command::Auth,
            _ => {
                return Err(ParseError::UnsupportedParameter(
                    "Only AUTH TLS is supported.",
                ));
            }
        },
        "PBSZ" => Command::Pbsz(
            arg.trim()
                .parse()
                .map_err(|_| ParseError::BadArgument("PBSZ needs a number."))?,
        ),
        "PROT" => Command::Prot(match arg.trim().to_ascii_uppercase().as_str() {
            "C" => Protection::Clear,
            "P" => Protection::Private,
            "" => return Err(ParseError::BadArgument("PROT needs C or P.")),
            _ => {
                return Err(ParseError::UnsupportedParameter(
                    "Only PROT C and P are supported.",
                ));
            }
        }),
        "CCC" => Command::Ccc,
        "FEAT" => Command::Feat,
        "OPTS" => parse_opts(arg)?,
        "SIZE" => Command::Size(required("SIZE needs a file name.")?),
        "MDTM" => Command::Mdtm(required("MDTM needs a file name.")?),
        "ALLO" => Command::Allo,
        "HOST" => Command::Host(required("HOST needs a host name.")?.trim().to_owned()),
        "MFMT" => parse_mfmt(arg)?,
        "SITE" => parse_site(arg)?,
        _ => return Err(ParseError::Unknown),
    })
}

/// Drops Telnet IP/Synch sequences (`IAC x`) that clients such as ftplib send before `ABOR`.
fn strip_telnet(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut bytes = line.iter().copied();
    while let Some(byte) = bytes.next() {
        if byte == 0xFF {
            bytes.next();
        } else {
            out.push(byte);
        }
    }
    out
}

fn parse_type(arg: &str) -> Result<TransferType, ParseError> {
    let mut parts = arg.split_whitespace();
    match parts.next().map(|t| t.to_ascii_uppercase()).as_deref() {
        Some("A") => match parts.next().map(|f| f.to_ascii_uppercase()).as_deref() {
            None | Some("N") => Ok(TransferType::Ascii),
            Some(_) => Err(ParseError::UnsupportedParameter(
                "Only TYPE A N is supported.",
            )),
        },
        Some("I") => Ok(TransferType::Image),
        Some("L") if parts.next() == Some("8") => Ok(TransferType::Image),
        Some(_) => Err(ParseError::UnsupportedParameter(
            "Only TYPE A and I are supported.",
        )),
        None => Err(ParseError::BadArgument("TYPE needs A or I.")),
    }
}

/// `LIST -la dir` is what many clients send; the options are ls's, not ours.
fn strip_list_options(arg: &str) -> Option<String> {
    let mut rest = arg.trim_start();
    while rest.starts_with('-') {
        rest = match rest.split_once(' ') {
            Some((_, after)) => after.trim_start(),
            None => "",
        };
    }
    (!rest.is_empty()).then(|| rest.to_owned())
}

fn parse_port(arg: &str) -> Result<SocketAddr, ParseError> {
    const BAD: ParseError = ParseError::BadArgument("PORT needs h1,h2,h3,h4,p1,p2.");
    let numbers: Vec<u8> = arg
        .trim()
        .split(',')
        .map(|n| n.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| BAD)?;
    let [a, b, c, d, p1, p2] = numbers[..] else {
        return Err(BAD);
    };
    let port = u16::from(p1) << 8 | u16::from(p2);
    Ok(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(a, b, c, d),
        port,
    )))
}

fn parse_eprt(arg: &str) -> Result<SocketAddr, ParseError> {
    const BAD: ParseError = ParseError::BadArgument("EPRT needs |proto|address|port|.");
    let arg = arg.trim();
    let delimiter = arg.chars().next().ok_or(BAD)?;
    if !(33..=126).contains(&u32::from(delimiter)) {
        return Err(BAD);
    }
    let fields: Vec<&str> = arg.split(delimiter).collect();
    let ["", proto, address, port, ""] = fields[..] else {
        return Err(BAD);
    };
    let port: u16 = port.parse().map_err(|_| BAD)?;
    let ip: IpAddr = match proto {
        "1" => IpAddr::V4(address.parse().map_err(|_| BAD)?),
        "2" => IpAddr::V6(address.parse().map_err(|_| BAD)?),
        _ => {
            return Err(ParseError::UnsupportedParameter(
                "Network protocol not supported, use (1,2)",
            ));
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// `MFMT YYYYMMDDHHMMSS[.sss] path` (draft-somers-ftp-mfxx), time in UTC.
fn parse_mfmt(arg: &str) -> Result<Command, ParseError> {
    const BAD: ParseError = ParseError::BadArgument("MFMT needs YYYYMMDDHHMMSS and a path.");
    let (time, path) = arg.split_once(' ').ok_or(BAD)?;
    let whole = time.split_once('.').map_or(time, |(whole, _)| whole);
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) || path.is_empty() {
        return Err(BAD);
    }
    let seconds = jiff::civil::DateTime::strptime("%Y%m%d%H%M%S", whole)
        .and_then(|time| time.to_zoned(jiff::tz::TimeZone::UTC))
        .map_err(|_| BAD)?
        .timestamp()
        .as_second();
    Ok(Command::Mfmt(seconds, path.to_owned()))
}

fn parse_site(arg: &str) -> Result<Command, ParseError> {
    let (what, rest) = arg.trim_start().split_once(' ').unwrap_or((arg.trim(), ""));
    match what.to_ascii_uppercase().as_str() {
        "CHMOD" => {
            const BAD: ParseError =
                ParseError::BadArgument("SITE CHMOD needs an octal mode (at most 777) and a path.");
            let (mode, path) = rest.trim_start().split_once(' ').ok_or(BAD)?;
            let mode = u32::from_str_radix(mode, 8).map_err(|_| BAD)?;
            if mode > 0o777 || path.is_empty() {
                return Err(BAD);
            }
            Ok(Command::SiteChmod(mode, path.to_owned()))
        }
        "" => Err(ParseError::BadArgument("SITE needs a command.")),
        _ => Err(ParseError::UnsupportedParameter(
            "Only SITE CHMOD is known here.",
        )),
    }
}

fn parse_opts(arg: &str) -> Result<Command, ParseError> {
    let (option, value) = match arg.trim().split_once(' ') {
        Some((option, value)) => (option, value.trim()),
        None => (arg.trim(), ""),
    };
    match option.to_ascii_uppercase().as_str() {
        "UTF8" | "UTF-8" => match value.to_ascii_uppercase().as_str() {
            "ON" | "" => Ok(Command::OptsUtf8(true)),
            "OFF" => Ok(Command::OptsUtf8(false)),
            _ => Err(ParseError::BadArgument("OPTS UTF8 takes ON or OFF.")),
        },
        "MLST" => Ok(Command::OptsMlst(value.to_owned())),
        "" => Err(ParseError::BadArgument("OPTS needs an option.")),
        _ => Err(ParseError::UnsupportedParameter("Option not supported.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_commands() {
        assert_eq!(parse(b"USER bob\r\n"), Ok(Command::User("bob".into())));
        assert_eq!(
            parse(b"retr a b.txt\r\n"),
            Ok(Command::Retr("a b.txt".into()))
        );
        assert_eq!(parse(b"TYPE I\r\n"), Ok(Command::Type(TransferType::Image)));
        assert_eq!(
            parse(b"TYPE A N\r\n"),
            Ok(Command::Type(TransferType::Ascii))
        );
        assert_eq!(parse(b"LIST -la\r\n"), Ok(Command::List(None)));
        assert_eq!(
            parse(b"LIST -a sub\r\n"),
            Ok(Command::List(Some("sub".into())))
        );
        assert_eq!(parse(b"EPSV ALL\r\n"), Ok(Command::Epsv(EpsvArg::All)));
        assert_eq!(parse(b"REST 100\r\n"), Ok(Command::Rest(100)));
        assert_eq!(parse(b"OPTS UTF8 ON\r\n"), Ok(Command::OptsUtf8(true)));
        assert_eq!(parse(b"PROT P\r\n"), Ok(Command::Prot(Protection::Private)));
        assert_eq!(parse(b"\xff\xf4\xff\xf2ABOR\r\n"), Ok(Command::Abor));
    }

    #[test]
    fn parses_port_and_eprt() {
        assert_eq!(
            parse(b"PORT 127,0,0,1,4,1\r\n"),
            Ok(Command::Port("127.0.0.1:1025".parse().unwrap()))
        );
        assert_eq!(
            parse(b"EPRT |1|10.0.0.1|2121|\r\n"),
            Ok(Command::Eprt("10.0.0.1:2121".parse().unwrap()))
        );
        assert_eq!(
            parse(b"EPRT |2|::1|2121|\r\n"),
            Ok(Command::Eprt("[::1]:2121".parse().unwrap()))
        );
        assert_eq!(parse(b"PORT 1,2,3\r\n").unwrap_err().code(), 501);
        assert_eq!(parse(b"PORT 1,2,3,4,5,256\r\n").unwrap_err().code(), 501);
        assert_eq!(parse(b"EPRT |3|x|1|\r\n").unwrap_err().code(), 504);
    }

    #[test]
    fn parses_host_mfmt_and_site_chmod() {
        assert_eq!(
            parse(b"HOST ftp.example.com\r\n"),
            Ok(Command::Host("ftp.example.com".into()))
        );
        assert_eq!(
            parse(b"MFMT 20260102030405 a b.txt\r\n"),
            Ok(Command::Mfmt(1_767_323_045, "a b.txt".into()))
        );
        assert_eq!(
            parse(b"MFMT 20260102030405.123 f\r\n"),
            Ok(Command::Mfmt(1_767_323_045, "f".into()))
        );
        assert_eq!(parse(b"MFMT 2026 f\r\n").unwrap_err().code(), 501);
        assert_eq!(parse(b"MFMT 20261399000000 f\r\n").unwrap_err().code(), 501);
        assert_eq!(
            parse(b"SITE CHMOD 640 my file\r\n"),
            Ok(Command::SiteChmod(0o640, "my file".into()))
        );
        assert_eq!(parse(b"site chmod 4755 f\r\n").unwrap_err().code(), 501);
        assert_eq!(parse(b"SITE CHMOD 9 f\r\n").unwrap_err().code(), 501);
        assert_eq!(parse(b"SITE EXEC ls\r\n").unwrap_err().code(), 504);
    }

    #[test]
    fn rejects_bad_input_with_the_right_code() {
        assert_eq!(parse(b"FOO\r\n").unwrap_err().code(), 500);
        assert_eq!(parse(b"RETR\r\n").unwrap_err().code(), 501);
        assert_eq!(parse(b"REST x\r\n").unwrap_err().code(), 501);
        assert_eq!(parse(b"MODE B\r\n").unwrap_err().code(), 504);
        assert_eq!(parse(b"RETR \xc3\x28\r\n").unwrap_err().code(), 500);
        assert_eq!(parse(b"CDUP x\r\n").unwrap_err().code(), 501);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&line);
        }

        #[test]
        fn path_arguments_round_trip(name in "[^\r\n\0]{1,100}") {
            let line = format!("RETR {name}\r\n");
            prop_assert_eq!(parse(line.as_bytes()), Ok(Command::Retr(name)));
        }

        #[test]
        fn port_round_trips(a: u8, b: u8, c: u8, d: u8, port: u16) {
            let line = format!("PORT {a},{b},{c},{d},{},{}\r\n", port >> 8, port & 0xff);
            let expected = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port));
            prop_assert_eq!(parse(line.as_bytes()), Ok(Command::Port(expected)));
        }

        #[test]
        fn errors_carry_a_reply_code(line in "[A-Za-z]{1,6}( [ -~]{0,40})?") {
            if let Err(error) = parse(line.as_bytes()) {
                prop_assert!(matches!(error.code(), 500 | 501 | 504));
                prop_assert!(!error.text().is_empty());
            }
        }
    }
}
