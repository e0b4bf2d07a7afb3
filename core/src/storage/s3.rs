//! S3 backend (aws-sdk-s3): ranged streaming GETs, multipart PUTs aborted on failure, and
//! presigned GETs signed for the public endpoint (`S3_PUBLIC_ENDPOINT_URL`).

use super::{Cause, ObjectReader, Result, StorageError};
use crate::settings::StorageSettings;
use aws_sdk_s3::{
    config::{
        timeout::TimeoutConfig, BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    },
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    presigning::PresigningConfig,
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
    Client,
};
use aws_smithy_http_client::tls;
use secrecy::ExposeSecret;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Part size of multipart uploads (the S3 minimum): the most an upload holds in memory.
const PART_SIZE: u64 = 5 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct S3Store {
    client: Client,
    /// Same credentials, but signing for the host clients reach (presigned URLs).
    public: Client,
    bucket: String,
}

fn client(endpoint: &str, region: &str, access_key: &str, secret_key: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "bulk-import",
        ))
        .http_client(
            // hyper 1 + rustls with ring: the TLS stack the rest of the tree uses (Cargo.toml).
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        )
        .force_path_style(true)
        // S3-compatible stores differ in checksum support; only send them where required.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .read_timeout(Duration::from_secs(30))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

fn classify<E>(key: &str, err: SdkError<E>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let message = DisplayErrorContext(&err).to_string();
    let transient = matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
    ) || status.is_some_and(|s| s >= 500 || s == 429);
    if !transient && status == Some(404) {
        return StorageError::NotFound(key.to_string());
    }
    let source: Option<Cause> = Some(Box::new(err));
    if transient {
        StorageError::Unavailable { message, source }
    } else {
        StorageError::Other { message, source }
    }
}

impl S3Store {
    pub fn new(settings: &StorageSettings) -> S3Store {
        let StorageSettings::S3 {
            endpoint,
            public_endpoint,
            access_key,
            secret_key,
            bucket,
            region,
        } = settings
        else {
            unreachable!("S3Store::new is only called with S3 settings")
        };
        let secret = secret_key.expose_secret();
        S3Store {
            client: client(endpoint, region, access_key, secret),
            public: client(public_endpoint, region, access_key, secret),
            bucket: bucket.clone(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub async fn size(&self, key: &str) -> Result<u64> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(out.content_length().unwrap_or(0).max(0) as u64)
    }

    pub async fn open_read(&self, key: &str, offset: u64) -> Result<ObjectReader> {
        let mut req = self.client.get_object().bucket(&self.bucket).key(key);
        if offset > 0 {
            req = req.range(format!("bytes={offset}-"));
        }
        match req.send().await {
            Ok(out) => Ok(Box::pin(out.body.into_async_read())),
            // Resuming exactly at the end of the object: nothing left to read.
            Err(e) if offset > 0 && e.raw_response().map(|r| r.status().as_u16()) == Some(416) => {
                Ok(Box::pin(tokio::io::empty()))
            }
            Err(e) => Err(classify(key, e)),
        }
    }

    pub async fn put_stream<R: AsyncRead + Unpin + Send>(
        &self,
        key: &str,
        mut body: R,
    ) -> Result<u64> {
        let first = read_part(&mut body).await?;
        if (first.len() as u64) < PART_SIZE {
            let n = first.len() as u64;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(first))
                .send()
                .await
                .map_err(|e| classify(key, e))?;
            return Ok(n);
        }
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        let upload_id = upload
            .upload_id()
            .ok_or_else(|| StorageError::other("multipart upload without an id"))?
            .to_string();
        let result = self.upload_parts(key, &upload_id, first, &mut body).await;
        if result.is_err() {
            // Never leave the parts of a failed upload behind.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    async fn upload_parts<R: AsyncRead + Unpin + Send>(
        &self,
        key: &str,
        upload_id: &str,
        first: Vec<u8>,
        body: &mut R,
    ) -> Result<u64> {
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut chunk = first;
        let mut number = 1;
        loop {
            total += chunk.len() as u64;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| classify(key, e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
            chunk = read_part(body).await?;
            if chunk.is_empty() {
                break;
            }
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(total)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify(key, e))?;
        Ok(())
    }

    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Result<String> {
        let config = PresigningConfig::expires_in(ttl).map_err(|e| StorageError::Other {
            message: "invalid presigning lifetime".into(),
            source: Some(Box::new(e)),
        })?;
        let req = self
            .public
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| classify(key, e))?;
        Ok(req.uri().to_string())
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(prefix, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        // Parts of unfinished multipart uploads are objects-to-be too.
        let uploads = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .map_err(|e| classify(prefix, e))?;
        keys.extend(
            uploads
                .uploads()
                .iter()
                .filter_map(|u| u.key().map(|k| format!("{k} (unfinished upload)"))),
        );
        Ok(keys)
    }

    /// Aborts multipart uploads under `prefix` that stopped moving: started more than `age`
    /// ago and with no part stored within `age` either (their writer died before it could
    /// complete or abort them: the parts would be kept, and billed, for ever); returns how
    /// many. An old upload whose bytes still arrive (a part stored recently) is left alone.
    pub async fn abort_stale_uploads(&self, prefix: &str, age: Duration) -> Result<usize> {
        let cutoff = std::time::SystemTime::now() - age;
        let mut aborted = 0;
        let mut key_marker: Option<String> = None;
        let mut upload_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_marker.take())
                .send()
                .await
                .map_err(|e| classify(prefix, e))?;
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let started = upload
                    .initiated()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok());
                if started.is_none_or(|t| t > cutoff) {
                    continue;
                }
                if self
                    .last_part_at(key, id)
                    .await?
                    .is_some_and(|t| t > cutoff)
                {
                    continue; // still moving
                }
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| classify(key, e))?;
                aborted += 1;
            }
            if page.is_truncated() != Some(true) {
                return Ok(aborted);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            upload_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                return Ok(aborted);
            }
        }
    }

    /// When the newest part of a multipart upload was stored (`None`: no part yet).
    async fn last_part_at(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<std::time::SystemTime>> {
        let mut newest = None;
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| classify(key, e))?;
            for part in page.parts() {
                let at = part
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok());
                newest = newest.max(at);
            }
            marker = page.next_part_number_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || marker.is_none() {
                return Ok(newest);
            }
        }
    }

    pub async fn check(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| classify(&self.bucket, e))?;
        Ok(())
    }
}

async fn read_part<R: AsyncRead + Unpin>(body: &mut R) -> Result<Vec<u8>> {
    // Allocated at its final size once: growing by doubling leaves freed blocks behind.
    let mut buf = Vec::with_capacity(PART_SIZE as usize);
    body.take(PART_SIZE).read_to_end(&mut buf).await?;
    Ok(buf)
}
