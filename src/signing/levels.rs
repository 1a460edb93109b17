//! What a level adds to a signature after the token made it: the
//! time-stamps of B-T, the validation data of B-LT, the archive time-stamp
//! of B-LTA.

use super::*;

impl<T: UsersTx + ?Sized> Signing<T> {
    /// What `level` adds to each of `n` signatures after it is made: a
    /// checked time-stamp over each (`stamp_digests`, SHA-256 of what each
    /// covers) at B-T, the TSA's calls in parallel; at B-LT also the
    /// certificates and CRLs of the signer's path and the TSA's.
    pub(super) async fn unsigned(
        &self,
        signer: &Signer,
        stamp_digests: Vec<Vec<u8>>,
        n: usize,
        level: Level,
    ) -> Result<Vec<format::Unsigned>> {
        if level == Level::BB {
            return Ok((0..n).map(|_| format::Unsigned::default()).collect());
        }
        let tsa = self.tsa.as_ref().ok_or_else(|| Error::Internal("a level above B-B without a TSA".into()))?;
        // The first failure cancels the others: the request is refused anyway.
        let now = self.clock.now();
        let stamps = futures_util::future::try_join_all(
            stamp_digests.iter().map(|d| tsa.stamp(DigestAlgorithm::Sha256, d, now)),
        )
        .await?;
        if level == Level::BT {
            return Ok(stamps
                .into_iter()
                .map(|stamp| format::Unsigned { signature_timestamp: Some(stamp), ..Default::default() })
                .collect());
        }
        let signer_path: Vec<Vec<u8>> =
            std::iter::once(signer.certificate().to_vec()).chain(signer.chain.iter().cloned()).collect();
        let signer_crls = self.path_crls(&signer_path, now).await?;
        let mut out = Vec::with_capacity(stamps.len());
        for stamp in stamps {
            let tsa_crls = self.path_crls(&stamp.path, now).await?;
            let validation = format::ValidationData {
                signer_chain: signer.chain.as_ref().clone(),
                signer_crls: signer_crls.clone(),
                tsa_path: stamp.path.clone(),
                tsa_crls,
            };
            out.push(format::Unsigned {
                signature_timestamp: Some(stamp),
                validation: Some(validation),
                archive_timestamp: None,
            });
        }
        Ok(out)
    }

    /// Adds an archive time-stamp over each (`digests`, of what each covers)
    /// to `unsigned`, with the CRLs of its TSA's path.
    pub(super) async fn archive(
        &self,
        digests: Vec<(DigestAlgorithm, Vec<u8>)>,
        mut unsigned: Vec<format::Unsigned>,
    ) -> Result<Vec<format::Unsigned>> {
        let tsa = self.tsa.as_ref().ok_or_else(|| Error::Internal("a level above B-B without a TSA".into()))?;
        let now = self.clock.now();
        let stamps = futures_util::future::try_join_all(digests.iter().map(|(alg, d)| tsa.stamp(*alg, d, now))).await?;
        for (u, stamp) in unsigned.iter_mut().zip(stamps) {
            let tsa_crls = self.path_crls(&stamp.path, now).await?;
            u.archive_timestamp = Some(format::ArchiveStamp { stamp, tsa_crls });
        }
        Ok(unsigned)
    }

    /// The CRLs of a path ([`crate::revocation::Crls::for_path`]), as the
    /// pipeline's errors.
    pub(super) async fn path_crls(&self, path: &[Vec<u8>], at: SystemTime) -> Result<Vec<Vec<u8>>> {
        path_crls(&self.crls, path, at).await
    }
}
