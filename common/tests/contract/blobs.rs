use std::time::Duration;

use bytes::Bytes;
use common::blobs::{BlobError, Blobs, CompletedPart};
use futures::StreamExt;

const MIB: usize = 1024 * 1024;

/// A plain HTTP client, as a browser or player would use the signed URLs.
fn http() -> reqwest::Client {
    common::chains::rpc::install_crypto_provider();
    reqwest::Client::new()
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// How faithfully the store behind the adapter behaves. The local adapter is checked exactly. moto, the S3
/// emulator, accepts any SigV4 signature and answers a part for an aborted upload with a 500 where S3
/// says `NoSuchUpload`: the S3 run checks that signed URLs work and that such a part fails, not how.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fidelity {
    Exact,
    Emulated,
}

pub async fn contract(blobs: &dyn Blobs, fidelity: Fidelity) {
    objects(blobs).await;
    signed_urls(blobs, fidelity).await;
    multipart(blobs, fidelity).await;
}

async fn objects(blobs: &dyn Blobs) {
    assert!(blobs.head("media/a/one").await.expect("head").is_none());
    assert!(matches!(blobs.get("media/a/one").await, Err(BlobError::NotFound(_))));
    let body = pattern(1000, 1);
    let meta = blobs
        .put("media/a/one", body.clone(), Some("video/mp4"))
        .await
        .expect("put");
    assert_eq!(meta.size, 1000);
    assert!(!meta.etag.is_empty());
    assert_eq!(blobs.get("media/a/one").await.expect("get"), body);
    let head = blobs.head("media/a/one").await.expect("head").expect("exists");
    assert_eq!((head.size, &head.etag), (1000, &meta.etag));

    // A key and a key below it can both exist, as in S3.
    blobs
        .put("media/a", Bytes::from_static(b"parent"), None)
        .await
        .expect("put parent");
    blobs
        .put("media/a/two", Bytes::from_static(b"2"), None)
        .await
        .expect("put two");
    blobs
        .put("other/x", Bytes::from_static(b"x"), None)
        .await
        .expect("put other");
    let listed: Vec<String> = blobs
        .list("media/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, ["media/a", "media/a/one", "media/a/two"]);
    assert_eq!(blobs.list("media/a/").await.expect("list").len(), 2);

    // Overwrites replace; a file is stored without being read into memory.
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), pattern(3 * MIB + 7, 2)).expect("write");
    let meta = blobs
        .put_file("media/a/one", file.path(), Some("video/mp4"))
        .await
        .expect("put_file");
    assert_eq!(meta.size, (3 * MIB + 7) as u64);
    assert_eq!(blobs.get("media/a/one").await.expect("get"), pattern(3 * MIB + 7, 2));

    // Streamed reads give the same bytes, in more than one chunk for a large object.
    let mut chunks = blobs.get_stream("media/a/one").await.expect("get_stream");
    let (mut streamed, mut count) = (Vec::new(), 0);
    while let Some(chunk) = chunks.next().await {
        streamed.extend_from_slice(&chunk.expect("chunk"));
        count += 1;
    }
    assert_eq!(Bytes::from(streamed), pattern(3 * MIB + 7, 2));
    assert!(count > 1, "read in {count} chunk");
    assert!(matches!(
        blobs.get_stream("media/none").await,
        Err(BlobError::NotFound(_))
    ));
    // A prefix that ends mid-segment lists what starts with it.
    let listed: Vec<String> = blobs
        .list("media/a/o")
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, ["media/a/one"]);

    blobs.delete("media/a/one").await.expect("delete");
    blobs
        .delete("media/a/one")
        .await
        .expect("deleting a missing object succeeds");
    assert!(blobs.head("media/a/one").await.expect("head").is_none());
    assert_eq!(
        blobs.get("media/a").await.expect("parent survives"),
        Bytes::from_static(b"parent")
    );

    for bad in ["", "../escape", "a//b", "/abs"] {
        assert!(
            matches!(blobs.put(bad, Bytes::new(), None).await, Err(BlobError::InvalidKey(..))),
            "{bad:?}"
        );
    }
}

async fn signed_urls(blobs: &dyn Blobs, fidelity: Fidelity) {
    let http = http();
    let body = pattern(4096, 3);
    blobs.put("signed/get", body.clone(), None).await.expect("put");
    let url = blobs
        .signed_get_url("signed/get", Duration::from_secs(60))
        .await
        .expect("sign");
    assert!(url.expires_at > chrono::Utc::now());
    let response = http.get(&url.url).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.expect("body"), body);

    // Byte ranges, which ffprobe uses to read a source without downloading it.
    let response = http
        .get(&url.url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .expect("ranged GET");
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.expect("body"), body.slice(100..200));

    let put = blobs
        .signed_put_url("signed/put", Duration::from_secs(60))
        .await
        .expect("sign put");
    let response = http.put(&put.url).body(body.clone()).send().await.expect("PUT");
    assert_eq!(response.status(), 200);
    assert_eq!(blobs.get("signed/put").await.expect("get"), body);
    if fidelity == Fidelity::Emulated {
        return;
    }

    // Any alteration is refused.
    let tampered = url.url.replace("signed/get", "signed/GET");
    assert_eq!(http.get(&tampered).send().await.expect("GET").status(), 403);
    let forged = flip_last_signature_char(&url.url);
    assert_eq!(http.get(&forged).send().await.expect("GET").status(), 403);

    // An expired URL is refused.
    let short = blobs
        .signed_get_url("signed/get", Duration::from_secs(1))
        .await
        .expect("sign");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(http.get(&short.url).send().await.expect("GET").status(), 403);

    // A PUT URL does not read, and a GET URL does not write.
    assert_eq!(http.get(&put.url).send().await.expect("GET").status(), 403);
    assert_eq!(
        http.put(&url.url).body("overwrite").send().await.expect("PUT").status(),
        403
    );
    assert_eq!(blobs.get("signed/get").await.expect("unchanged"), pattern(4096, 3));
}

fn flip_last_signature_char(url: &str) -> String {
    let (name, at) = ["signature=", "X-Amz-Signature="]
        .iter()
        .find_map(|name| url.find(name).map(|at| (*name, at)))
        .expect("a signature parameter");
    let start = at + name.len();
    let end = url[start..].find('&').map_or(url.len(), |n| start + n);
    let mut chars: Vec<char> = url.chars().collect();
    chars[end - 1] = if chars[end - 1] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

async fn multipart(blobs: &dyn Blobs, fidelity: Fidelity) {
    let http = http();
    let key = "sources/multipart";
    let upload = blobs.create_multipart(key, Some("video/mp4")).await.expect("create");
    let first = pattern(5 * MIB, 4);
    let second = pattern(1234, 5);
    // Part 1 through its presigned URL, as a browser would send it; part 2 through the port.
    let url = blobs
        .signed_part_url(key, &upload, 1, Duration::from_secs(60))
        .await
        .expect("part url");
    let response = http.put(&url.url).body(first.clone()).send().await.expect("PUT part");
    assert_eq!(response.status(), 200);
    let etag1 = response.headers()["etag"].to_str().expect("etag").to_owned();
    let etag2 = blobs
        .upload_part(key, &upload, 2, second.clone())
        .await
        .expect("part 2");

    let wrong = [
        CompletedPart {
            part_number: 1,
            etag: etag2.clone(),
        },
        CompletedPart {
            part_number: 2,
            etag: etag2.clone(),
        },
    ];
    assert!(matches!(
        blobs.complete_multipart(key, &upload, &wrong).await,
        Err(BlobError::InvalidParts(_))
    ));

    let parts = [
        CompletedPart {
            part_number: 1,
            etag: etag1,
        },
        CompletedPart {
            part_number: 2,
            etag: etag2,
        },
    ];
    let meta = blobs.complete_multipart(key, &upload, &parts).await.expect("complete");
    assert_eq!(meta.size, (5 * MIB + 1234) as u64);
    let stored = blobs.get(key).await.expect("get");
    assert_eq!(stored.len(), 5 * MIB + 1234);
    assert_eq!(stored.slice(..5 * MIB), first);
    assert_eq!(stored.slice(5 * MIB..), second);

    reordered_and_replaced_parts(blobs).await;

    // A part smaller than 5 MiB is allowed only last.
    let upload = blobs.create_multipart("sources/small", None).await.expect("create");
    let small1 = blobs
        .upload_part("sources/small", &upload, 1, pattern(100, 6))
        .await
        .expect("part 1");
    let small2 = blobs
        .upload_part("sources/small", &upload, 2, pattern(100, 7))
        .await
        .expect("part 2");
    let parts = [
        CompletedPart {
            part_number: 1,
            etag: small1,
        },
        CompletedPart {
            part_number: 2,
            etag: small2,
        },
    ];
    assert!(matches!(
        blobs.complete_multipart("sources/small", &upload, &parts).await,
        Err(BlobError::InvalidParts(_))
    ));

    // Aborted uploads take no more parts.
    blobs.abort_multipart("sources/small", &upload).await.expect("abort");
    let late = blobs.upload_part("sources/small", &upload, 3, pattern(10, 8)).await;
    match fidelity {
        Fidelity::Exact => assert!(matches!(late, Err(BlobError::NoSuchUpload(_))), "{late:?}"),
        Fidelity::Emulated => assert!(late.is_err(), "{late:?}"),
    }
    assert!(blobs.head("sources/small").await.expect("head").is_none());
}

/// S3's part semantics that resumable uploads lean on: a part uploaded again replaces the earlier one,
/// parts may arrive in any order, and parts left out of the completion are dropped.
async fn reordered_and_replaced_parts(blobs: &dyn Blobs) {
    let part = |n: u32, etag: &str| CompletedPart {
        part_number: n,
        etag: etag.to_owned(),
    };
    // In order, then part 2 again with other bytes, then a part 4 left out.
    let key = "sources/replaced";
    let upload = blobs.create_multipart(key, None).await.expect("create");
    let e1 = blobs
        .upload_part(key, &upload, 1, pattern(5 * MIB, 10))
        .await
        .expect("1");
    let stale = blobs
        .upload_part(key, &upload, 2, pattern(5 * MIB, 11))
        .await
        .expect("2");
    let e3 = blobs.upload_part(key, &upload, 3, pattern(700, 12)).await.expect("3");
    let e2 = blobs
        .upload_part(key, &upload, 2, pattern(5 * MIB, 13))
        .await
        .expect("2 again");
    assert_ne!(e2, stale);
    blobs.upload_part(key, &upload, 4, pattern(10, 14)).await.expect("4");
    assert!(matches!(
        blobs
            .complete_multipart(key, &upload, &[part(1, &e1), part(2, &stale), part(3, &e3)])
            .await,
        Err(BlobError::InvalidParts(_))
    ));
    blobs
        .complete_multipart(key, &upload, &[part(1, &e1), part(2, &e2), part(3, &e3)])
        .await
        .expect("complete");
    let stored = blobs.get(key).await.expect("get");
    let expected: Vec<u8> = [pattern(5 * MIB, 10), pattern(5 * MIB, 13), pattern(700, 12)].concat();
    assert!(stored == expected, "replaced part not used");

    // Out of order, and only the first two of three listed.
    let key = "sources/reordered";
    let upload = blobs.create_multipart(key, None).await.expect("create");
    let e2 = blobs.upload_part(key, &upload, 2, pattern(900, 21)).await.expect("2");
    let e1 = blobs
        .upload_part(key, &upload, 1, pattern(5 * MIB, 20))
        .await
        .expect("1");
    blobs
        .upload_part(key, &upload, 3, pattern(5 * MIB, 22))
        .await
        .expect("3");
    blobs
        .complete_multipart(key, &upload, &[part(1, &e1), part(2, &e2)])
        .await
        .expect("complete");
    let stored = blobs.get(key).await.expect("get");
    assert!(stored == [pattern(5 * MIB, 20), pattern(900, 21)].concat());

    // In order, with the last part left out: the first parts alone make the object.
    let key = "sources/prefix";
    let upload = blobs.create_multipart(key, None).await.expect("create");
    let e1 = blobs
        .upload_part(key, &upload, 1, pattern(5 * MIB, 30))
        .await
        .expect("1");
    let e2 = blobs.upload_part(key, &upload, 2, pattern(300, 31)).await.expect("2");
    blobs.upload_part(key, &upload, 3, pattern(300, 32)).await.expect("3");
    let meta = blobs
        .complete_multipart(key, &upload, &[part(1, &e1), part(2, &e2)])
        .await
        .expect("complete");
    assert_eq!(meta.size, (5 * MIB + 300) as u64);
    assert!(blobs.get(key).await.expect("get") == [pattern(5 * MIB, 30), pattern(300, 31)].concat());
}
