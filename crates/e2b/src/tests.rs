//! The codec and the generated messages: round trips in both codecs, the JSON the SDKs send
//! and read, envelopes across chunk boundaries, errors, and bad input that must come back as
//! `invalid_argument` (never a panic).

use crate::connect::*;
use crate::filesystem::{EntryInfo, FileType, StatResponse};
use crate::process::{
    self, process_event, process_input, process_selector, ProcessConfig, ProcessEvent,
    ProcessSelector, SendSignalRequest, Signal, StartRequest, StartResponse,
};
use std::time::Duration;

fn start_request() -> StartRequest {
    StartRequest {
        process: Some(ProcessConfig {
            cmd: "/bin/bash".into(),
            args: vec!["-l".into(), "-c".into(), "echo hi".into()],
            envs: [("A".to_string(), "b".to_string())].into_iter().collect(),
            cwd: Some("/tmp".into()),
        }),
        pty: Some(process::Pty {
            size: Some(process::pty::Size { cols: 80, rows: 24 }),
        }),
        tag: Some("web".into()),
        stdin: Some(false),
    }
}

#[test]
fn messages_round_trip_in_both_codecs() {
    let req = start_request();
    for codec in [Codec::Json, Codec::Proto] {
        let back: StartRequest = decode(codec, &encode(codec, &req)).unwrap();
        assert_eq!(back, req, "{codec:?}");
    }
}

#[test]
fn json_is_the_proto3_mapping_the_sdks_use() {
    // What the Python SDK sends for commands.run("echo hi", envs={"A": "b"}).
    let body = br#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"A":"b"}},"stdin":false}"#;
    let req: StartRequest = decode(Codec::Json, body).unwrap();
    let p = req.process.unwrap();
    assert_eq!(p.args[2], "echo hi");
    assert_eq!(p.envs["A"], "b");
    assert_eq!(p.cwd, None);
    assert_eq!(req.stdin, Some(false));
    assert_eq!(req.tag, None);

    // Events: camelCase names, bytes in base64, defaults left out.
    let ev = StartResponse {
        event: Some(ProcessEvent {
            event: Some(process_event::Event::End(process_event::EndEvent {
                exit_code: -1,
                exited: true,
                status: "exit status 255".into(),
                error: None,
            })),
        }),
    };
    let json: serde_json::Value = serde_json::from_slice(&encode(Codec::Json, &ev)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"event": {"end": {"exitCode": -1, "exited": true, "status": "exit status 255"}}})
    );
    let data = StartResponse {
        event: Some(ProcessEvent {
            event: Some(process_event::Event::Data(process_event::DataEvent {
                output: Some(process_event::data_event::Output::Stdout(b"hi\n".to_vec())),
            })),
        }),
    };
    let json: serde_json::Value = serde_json::from_slice(&encode(Codec::Json, &data)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"event": {"data": {"stdout": "aGkK"}}})
    );

    // Enums by name or number; field names in snake case too; unknown fields ignored.
    for body in [
        &br#"{"process":{"pid":7},"signal":"SIGNAL_SIGKILL"}"#[..],
        br#"{"process":{"pid":7},"signal":9,"fromTheFuture":true}"#,
    ] {
        let s: SendSignalRequest = decode(Codec::Json, body).unwrap();
        assert_eq!(s.signal(), Signal::Sigkill);
        assert_eq!(
            s.process,
            Some(ProcessSelector {
                selector: Some(process_selector::Selector::Pid(7))
            })
        );
    }
    let end: process_event::EndEvent = decode(Codec::Json, br#"{"exit_code":3}"#).unwrap();
    assert_eq!(end.exit_code, 3);
    let input: process::ProcessInput = decode(Codec::Json, br#"{"stdin":"aGkK"}"#).unwrap();
    assert_eq!(
        input.input,
        Some(process_input::Input::Stdin(b"hi\n".to_vec()))
    );
}

#[test]
fn filesystem_entry_json_has_timestamps_and_int64_strings() {
    let resp = StatResponse {
        entry: Some(EntryInfo {
            name: "a.txt".into(),
            r#type: FileType::File as i32,
            path: "/home/user/a.txt".into(),
            size: 12,
            mode: 0o644,
            permissions: "-rw-r--r--".into(),
            owner: "user".into(),
            group: "user".into(),
            modified_time: Some(crate::timestamp::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        }),
    };
    let json: serde_json::Value = serde_json::from_slice(&encode(Codec::Json, &resp)).unwrap();
    let e = &json["entry"];
    assert_eq!(e["type"], "FILE_TYPE_FILE");
    assert_eq!(e["size"], "12");
    assert_eq!(e["modifiedTime"], "2023-11-14T22:13:20Z");
    let back: StatResponse = decode(Codec::Json, &encode(Codec::Json, &resp)).unwrap();
    assert_eq!(back, resp);
}

#[test]
fn empty_bodies_are_empty_messages() {
    for codec in [Codec::Json, Codec::Proto] {
        let r: process::ListRequest = decode(codec, b"").unwrap();
        assert_eq!(r, process::ListRequest {});
    }
    let r: StartRequest = decode(Codec::Json, b"  \n").unwrap();
    assert_eq!(r, StartRequest::default());
}

#[test]
fn bad_messages_are_invalid_argument() {
    let e = decode::<StartRequest>(Codec::Json, b"{\"process\": 5}").unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(e.message.contains("process.StartRequest"), "{e}");
    let e = decode::<StartRequest>(Codec::Json, b"not json").unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    let e = decode::<SendSignalRequest>(Codec::Json, br#"{"signal":"SIGNAL_NOPE"}"#).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    let e = decode::<StartRequest>(Codec::Proto, &[0x0a, 0xff, 0xff]).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(e.message.contains("invalid protobuf"), "{e}");
}

#[test]
fn error_codes_map_to_connect_statuses() {
    let table = [
        (Code::Canceled, 499),
        (Code::InvalidArgument, 400),
        (Code::DeadlineExceeded, 504),
        (Code::NotFound, 404),
        (Code::AlreadyExists, 409),
        (Code::PermissionDenied, 403),
        (Code::ResourceExhausted, 429),
        (Code::FailedPrecondition, 400),
        (Code::Unimplemented, 501),
        (Code::Internal, 500),
        (Code::Unavailable, 503),
        (Code::Unauthenticated, 401),
    ];
    for (code, status) in table {
        assert_eq!(code.http_status(), status, "{code}");
        assert_eq!(Code::parse(code.as_str()), Some(code));
    }
    let r = ConnectError::not_found("process with pid 9 not found").reply();
    assert_eq!(r.status, 404);
    assert_eq!(r.content_type, "application/json");
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"code": "not_found", "message": "process with pid 9 not found"})
    );
    assert_eq!(
        ConnectError::from_json(&r.body),
        Some(ConnectError::not_found("process with pid 9 not found"))
    );
    assert_eq!(Code::parse("nope"), None);
}

#[test]
fn unary_replies_carry_the_codec() {
    let ok = unary_reply(Codec::Proto, Ok(process::ListResponse::default()));
    assert_eq!((ok.status, ok.content_type), (200, "application/proto"));
    let ok = unary_reply(Codec::Json, Ok(process::ListResponse::default()));
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"{}"[..]));
    let err = unary_reply::<process::ListResponse>(
        Codec::Proto,
        Err(ConnectError::new(Code::PermissionDenied, "no")),
    );
    assert_eq!((err.status, err.content_type), (403, "application/json"));
}

#[test]
fn envelopes_round_trip_across_any_chunking() {
    let msgs: Vec<StartResponse> = (0..3u32)
        .map(|pid| StartResponse {
            event: Some(ProcessEvent {
                event: Some(process_event::Event::Start(process_event::StartEvent {
                    pid,
                })),
            }),
        })
        .collect();
    for codec in [Codec::Json, Codec::Proto] {
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend_from_slice(&message_frame(codec, m));
        }
        wire.extend_from_slice(&end_stream(None));
        for chunk in [1, 2, 5, 7, wire.len()] {
            let mut r = EnvelopeReader::new();
            let mut got = Vec::new();
            let mut end = None;
            for c in wire.chunks(chunk) {
                r.push(c);
                while let Some(f) = r.next_frame().unwrap() {
                    if f.is_end() {
                        end = Some(parse_end_stream(&f.payload).unwrap());
                    } else {
                        got.push(decode_frame::<StartResponse>(codec, &f).unwrap());
                    }
                }
            }
            r.finish().unwrap();
            assert_eq!(got, msgs, "{codec:?} chunk {chunk}");
            assert_eq!(end, Some(None));
        }
    }
}

#[test]
fn end_of_stream_carries_the_error() {
    let e = ConnectError::new(Code::DeadlineExceeded, "the call's deadline passed");
    let f = end_stream(Some(&e));
    assert_eq!(f[0], FLAG_END_STREAM);
    let body: serde_json::Value = serde_json::from_slice(&f[5..]).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": {"code": "deadline_exceeded", "message": "the call's deadline passed"}})
    );
    assert_eq!(parse_end_stream(&f[5..]).unwrap(), Some(e));
    assert_eq!(&end_stream(None)[5..], b"{}");
}

#[test]
fn bad_envelopes_are_invalid_argument() {
    let mut r = EnvelopeReader::new();
    r.push(&envelope(FLAG_COMPRESSED, b"x"));
    assert_eq!(r.next_frame().unwrap_err().code, Code::InvalidArgument);

    let mut r = EnvelopeReader::new();
    r.push(&[0, 0xff, 0xff, 0xff, 0xff]);
    let e = r.next_frame().unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(e.message.contains("over the limit"), "{e}");

    let mut r = EnvelopeReader::new();
    r.push(&[0x80, 0, 0, 0, 0]);
    assert_eq!(r.next_frame().unwrap_err().code, Code::InvalidArgument);

    let mut r = EnvelopeReader::new();
    r.push(&[0, 0, 0, 0, 9, 1, 2]);
    assert_eq!(r.next_frame().unwrap(), None);
    assert_eq!(r.finish().unwrap_err().code, Code::InvalidArgument);

    let end = Frame {
        flags: FLAG_END_STREAM,
        payload: bytes::Bytes::from_static(b"{}"),
    };
    assert_eq!(
        decode_frame::<StartRequest>(Codec::Json, &end)
            .unwrap_err()
            .code,
        Code::InvalidArgument
    );
}

fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

#[test]
fn call_headers() {
    let c = Call::from_headers(
        Shape::Stream,
        headers(&[
            ("content-type", "application/connect+json"),
            ("connect-protocol-version", "1"),
            ("connect-timeout-ms", "60000"),
            ("keepalive-ping-interval", "50"),
        ]),
    )
    .unwrap();
    assert_eq!(c.codec, Codec::Json);
    assert_eq!(c.timeout, Some(Duration::from_secs(60)));
    assert_eq!(c.keepalive, Some(Duration::from_secs(50)));

    let c = Call::from_headers(
        Shape::Unary,
        headers(&[("content-type", "application/proto; charset=utf-8")]),
    )
    .unwrap();
    assert_eq!(
        (c.codec, c.timeout, c.keepalive),
        (Codec::Proto, None, None)
    );

    // A keepalive of 0 cannot make a stream spin.
    let c = Call::from_headers(
        Shape::Stream,
        headers(&[
            ("content-type", "application/connect+proto"),
            ("keepalive-ping-interval", "0"),
        ]),
    )
    .unwrap();
    assert_eq!(c.keepalive, Some(MIN_KEEPALIVE));
}

#[test]
fn bad_call_headers_are_refused() {
    for (shape, ct) in [
        (Shape::Unary, "application/connect+json"),
        (Shape::Stream, "application/json"),
        (Shape::Unary, "text/plain"),
    ] {
        assert!(matches!(
            Call::from_headers(shape, headers(&[("content-type", ct)])),
            Err(Rejection::UnsupportedMediaType { .. })
        ));
    }
    assert!(matches!(
        Call::from_headers(Shape::Unary, headers(&[])),
        Err(Rejection::UnsupportedMediaType { .. })
    ));
    for (k, v) in [
        ("connect-protocol-version", "2"),
        ("connect-timeout-ms", "0"),
        ("connect-timeout-ms", "-5"),
        ("connect-timeout-ms", "12345678901"),
        ("connect-timeout-ms", "soon"),
        ("keepalive-ping-interval", "often"),
    ] {
        match Call::from_headers(
            Shape::Unary,
            headers(&[("content-type", "application/json"), (k, v)]),
        ) {
            Err(Rejection::Error(e)) => assert_eq!(e.code, Code::InvalidArgument, "{k}: {v}"),
            other => panic!("{k}: {v} gave {other:?}"),
        }
    }
    match Call::from_headers(
        Shape::Unary,
        headers(&[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ]),
    ) {
        Err(Rejection::Error(e)) => assert_eq!(e.code, Code::Unimplemented),
        other => panic!("gzip gave {other:?}"),
    }
}

/// Pseudo-random bytes (no dependency): every decoder must answer them with a value or an
/// error, never a panic.
#[test]
fn random_input_never_panics() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..2000 {
        let len = (next() % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = decode::<StartRequest>(Codec::Proto, &bytes);
        let _ = decode::<crate::process::StreamInputRequest>(Codec::Proto, &bytes);
        let _ = decode::<StartRequest>(Codec::Json, &bytes);
        let _ = parse_end_stream(&bytes);
        let _ = ConnectError::from_json(&bytes);
        let mut r = EnvelopeReader::new();
        r.push(&bytes);
        while let Ok(Some(f)) = r.next_frame() {
            let _ = decode_frame::<StartRequest>(Codec::Proto, &f);
        }
        let s = String::from_utf8_lossy(&bytes);
        let _ = parse_timeout(&s);
        let _ = parse_keepalive(&s);
        let _ = parse_content_type(&s);
        assert!(round < 2000);
    }
}
