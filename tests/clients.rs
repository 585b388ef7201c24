//! Real FTP clients against ftp-server on loopback: curl, lftp, Python's ftplib and suppaftp.

mod common;

use std::io::Cursor;

use common::{Options, Server, assert_ftplib_session, require, run_ok};

fn server() -> Server {
    Server::start(Options {
        users: vec![("alice", "wonderland", true)],
        args: vec!["--public-address".into(), "127.0.0.1".into()],
        ..Default::default()
    })
}

#[test]
fn curl_downloads_uploads_and_lists_over_pasv_with_the_advertised_address() {
    let server = server();
    let local = server.state.path().join("upload.bin");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &payload).unwrap();
    let url = server.url();
    // PASV (not EPSV), and the address from the 227 reply really used.
    let pasv = [
        "--ftp-pasv",
        "--disable-epsv",
        "--no-ftp-skip-pasv-ip",
        "-sS",
        "--user",
        "alice:wonderland",
    ];
    let mut args = pasv.to_vec();
    let upload_url = format!("{url}/dir/upload.bin");
    args.extend([
        "--ftp-create-dirs",
        "-T",
        local.to_str().unwrap(),
        &upload_url,
    ]);
    run_ok("curl", &args);
    assert_eq!(
        std::fs::read(server.path("dir/upload.bin")).unwrap(),
        payload
    );

    let output = run_ok("curl", &[&pasv[..], &[upload_url.as_str()]].concat());
    assert_eq!(output.stdout, payload);

    let list_url = format!("{url}/dir/");
    let output = run_ok("curl", &[&pasv[..], &[list_url.as_str()]].concat());
    let listing = String::from_utf8(output.stdout).unwrap();
    assert!(
        listing.contains("upload.bin") && listing.starts_with("-rw"),
        "{listing}"
    );
    let output = run_ok("curl", &[&pasv[..], &["-l", list_url.as_str()]].concat());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim_end(),
        "upload.bin"
    );

    // EPSV, a range request (REST), and a DELE through -Q.
    let output = run_ok(
        "curl",
        &[
            "-sS",
            "--user",
            "alice:wonderland",
            "-r",
            "1000-",
            &upload_url,
        ],
    );
    assert_eq!(output.stdout, payload[1000..]);
    run_ok(
        "curl",
        &[
            "-sS",
            "--user",
            "alice:wonderland",
            "-Q",
            "-DELE /dir/upload.bin",
            &list_url,
        ],
    );
    assert!(!server.path("dir/upload.bin").exists());
}

#[test]
fn lftp_transfers_and_manages_files() {
    let server = server();
    let local = server.state.path().join("local.txt");
    std::fs::write(&local, "lftp payload\n").unwrap();
    let back = server.state.path().join("back.txt");
    let script = format!(
        "set ftp:fix-pasv-address false; set ftp:prefer-epsv false; set net:max-retries 1; set net:timeout 10; \
         open -u alice,wonderland ftp://127.0.0.1:{port}; \
         mkdir lf; cd lf; put {local} -o remote.txt; get remote.txt -o {back}; \
         mv remote.txt renamed.txt; cls -l; quote SIZE renamed.txt; rm renamed.txt; cd ..; rmdir lf; \
         set ftp:prefer-epsv true; cls; bye",
        port = server.port,
        local = local.display(),
        back = back.display()
    );
    let output = run_ok("lftp", &["-c", &script]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("renamed.txt"), "{stdout}");
    assert!(stdout.contains("213 13"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "lftp payload\n");
    assert!(!server.path("lf").exists());
}

#[test]
fn python_ftplib_session() {
    let server = server();
    assert_ftplib_session(server.port, &["plain"]);
}

#[test]
fn suppaftp_session() {
    let server = server();
    let mut ftp = suppaftp::FtpStream::connect(("127.0.0.1", server.port)).unwrap();
    ftp.login("alice", "wonderland").unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .unwrap();
    ftp.mkdir("rs").unwrap();
    ftp.cwd("rs").unwrap();
    assert_eq!(ftp.pwd().unwrap(), "/rs");
    let payload = vec![42u8; 100_000];
    ftp.put_file("a.bin", &mut Cursor::new(payload.clone()))
        .unwrap();
    assert_eq!(ftp.size("a.bin").unwrap(), payload.len());
    assert_eq!(ftp.retr_as_buffer("a.bin").unwrap().into_inner(), payload);
    ftp.set_mode(suppaftp::Mode::ExtendedPassive);
    assert_eq!(ftp.nlst(None).unwrap(), vec!["a.bin".to_string()]);
    let mlsd = ftp.mlsd(None).unwrap();
    assert!(mlsd.iter().any(|line| line.ends_with(" a.bin")), "{mlsd:?}");
    assert!(ftp.mlst(Some("a.bin")).unwrap().contains("type=file"));
    ftp.mdtm("a.bin").unwrap();
    ftp.append_file("a.bin", &mut Cursor::new(vec![1u8; 10]))
        .unwrap();
    assert_eq!(ftp.size("a.bin").unwrap(), 100_010);
    ftp.resume_transfer(100_000).unwrap();
    let mut stream = ftp.retr_as_stream("a.bin").unwrap();
    let mut tail = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut tail).unwrap();
    stream.finish().unwrap();
    assert_eq!(tail, vec![1u8; 10]);
    ftp.rename("a.bin", "b.bin").unwrap();
    ftp.rm("b.bin").unwrap();
    ftp.cdup().unwrap();
    ftp.rmdir("rs").unwrap();
    assert!(ftp.feat().unwrap().contains_key("MLST"));
    ftp.noop().unwrap();
    ftp.quit().unwrap();
}

#[test]
fn clients_are_present() {
    for tool in ["curl", "lftp", "python3", "openssl", "ss"] {
        require(tool);
    }
}
