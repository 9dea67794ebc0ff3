//! `neverust upload` and `neverust download`: clients of a running node's API.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

use super::{ApiTarget, DownloadArgs, UploadArgs};
use crate::api::headers;

fn progress(total: Option<u64>, verb: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {bytes} {bytes_per_sec}").expect("valid template"),
        ),
    };
    bar.with_message(verb.to_string())
}

/// The `error` field of a JSON error answer, or the raw text.
async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or(body);
    format!("{status}: {message}")
}

/// Where a download goes when `--output` names a directory: the dataset's own filename (from the
/// answer's Content-Disposition, reduced to a safe base name) in it, or the CID.
fn output_in_dir(dir: &Path, response: &reqwest::Response, cid: &str) -> PathBuf {
    let name = response
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|value| headers::disposition_header_filename(value.as_bytes()).ok())
        .flatten()
        .and_then(|name| headers::safe_filename(&name));
    dir.join(name.unwrap_or_else(|| cid.to_string()))
}

impl ApiTarget {
    /// `path` under the node's API.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url.trim_end_matches('/'))
    }

    /// A client that sends the access token with every request, when one is given.
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let token = match (&self.api_token_file, std::env::var("NEVERUST_API_TOKEN")) {
            (Some(path), _) => Some(crate::secret_file::read(path).map_err(anyhow::Error::msg)?),
            (None, Ok(token)) => Some(token),
            (None, Err(_)) => None,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .context("the API token is not valid in an HTTP header")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(reqwest::Client::builder().default_headers(headers).build()?)
    }
}

pub async fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let file = tokio::fs::File::open(&args.file)
        .await
        .with_context(|| format!("opening {}", args.file.display()))?;
    let length = file.metadata().await?.len();
    let bar = progress(Some(length), "uploading");
    let counter = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
        .inspect_ok(move |chunk| counter.inc(chunk.len() as u64));
    let mut request = args
        .api
        .client()?
        .post(args.api.url("/api/archivist/v1/data"))
        .header(reqwest::header::CONTENT_LENGTH, length)
        .body(reqwest::Body::wrap_stream(stream));
    if let Some(disposition) =
        args.file.file_name().and_then(|n| headers::disposition_for(&n.to_string_lossy()))
    {
        request = request.header(reqwest::header::CONTENT_DISPOSITION, disposition);
    }
    if let Some(mime) = &args.mime_type {
        request = request.header(reqwest::header::CONTENT_TYPE, mime);
    }
    let response = request.send().await.with_context(|| format!("sending to {}", args.api.api_url))?;
    bar.finish_and_clear();
    if !response.status().is_success() {
        bail!("upload refused: {}", error_text(response).await);
    }
    println!("{}", response.text().await?.trim());
    Ok(())
}

pub async fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let url = args.api.url(&format!("/api/archivist/v1/data/{}", args.cid));
    let response = args.api.client()?.get(&url).send().await.with_context(|| format!("requesting {url}"))?;
    if !response.status().is_success() {
        bail!("download refused: {}", error_text(response).await);
    }
    let output = match args.output {
        Some(dir) if dir.is_dir() => Some(output_in_dir(&dir, &response, &args.cid)),
        other => other,
    };
    let bar = progress(response.content_length(), "downloading");
    let mut body = response.bytes_stream();
    match &output {
        Some(path) => {
            let partial = path.with_extension(match path.extension() {
                Some(ext) => format!("{}.part", ext.to_string_lossy()),
                None => "part".into(),
            });
            let mut out = tokio::fs::File::create(&partial)
                .await
                .with_context(|| format!("creating {}", partial.display()))?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.context("download interrupted")?;
                out.write_all(&chunk).await?;
                bar.inc(chunk.len() as u64);
            }
            out.sync_all().await?;
            tokio::fs::rename(&partial, path).await?;
            eprintln!("saved {}", path.display());
        }
        None => {
            let mut out = tokio::io::stdout();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.context("download interrupted")?;
                out.write_all(&chunk).await?;
                bar.inc(chunk.len() as u64);
            }
            out.flush().await?;
        }
    }
    bar.finish_and_clear();
    Ok(())
}
