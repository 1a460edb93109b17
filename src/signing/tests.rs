use super::*;

struct Chunks(Vec<Bytes>);

#[async_trait]
impl Document for Chunks {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(if self.0.is_empty() { None } else { Some(self.0.remove(0)) })
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
}

#[test]
fn documents_are_hashed_in_chunks_and_kept_only_within_the_limit() {
    let data = vec![7u8; 200_000];
    let chunks = || Chunks(data.chunks(32 * 1024).map(Bytes::copy_from_slice).collect());
    let (digest, len, kept) = run(hash_document(&mut chunks(), None)).expect("hash");
    assert_eq!((digest, len, kept), (inkan_keystore::Digest::of(DigestAlgorithm::Sha256, &data), 200_000, None));
    let (_, _, kept) = run(hash_document(&mut chunks(), Some(200_000))).expect("kept");
    assert_eq!(kept.as_deref(), Some(&data[..]));
    let err = run(hash_document(&mut chunks(), Some(100_000))).expect_err("too large");
    assert!(matches!(err, Error::TooLarge { limit: 100_000 }), "{err}");
}

#[test]
fn every_format_family_is_described_once_and_read_back_by_its_names() {
    use super::format::Family;
    for family in Family::ALL {
        let about = family.about();
        assert_eq!(Family::from_api(about.api, &Family::ALL).ok(), Some(family));
        if let Some(code) = about.csc {
            assert_eq!(Family::from_csc(code), Some(family));
        }
        assert!(about.levels.contains(&Level::BB), "{about:?}");
    }
    let mut names: Vec<&str> = Family::ALL.iter().map(|f| f.about().api).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Family::ALL.len(), "one API name per family");
    assert_eq!(Format::CadesEnveloping.family(), Family::Cades);
    assert_eq!(Format::Xades(None).family().about().csc, Some("X"));
    let refused = Family::from_api("raw", &[Family::Cades, Family::Xades]).map_err(|e| e.to_string());
    assert_eq!(refused, Err("format must be cades or xades, not \"raw\"".to_string()));
    assert_eq!(Family::from_csc("R"), None);
    let all = Family::from_api("x", &Family::ALL).map_err(|e| e.to_string());
    assert_eq!(all, Err("format must be cades, xades or raw, not \"x\"".to_string()));
}
