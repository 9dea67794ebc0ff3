//! The reference pages in `docs/` (`cli.md`, `api.md`), generated from the sources so they
//! cannot drift: the CLI's from its clap definitions, the API's from our OpenAPI document. A test
//! compares each with the committed page; `NEVERUST_UPDATE_DOCS=1 cargo test -p neverust --lib
//! reference` writes them.

use std::fmt::Write as _;

/// The CLI reference: every command's full help, as `neverust <command> --help` prints it.
pub fn cli_markdown() -> String {
    use clap::CommandFactory;
    let mut cli = crate::cli::Cli::command().term_width(100);
    cli.build();
    let mut out = String::from(
        "# Command-line reference\n\n\
         Generated from the command line's definitions (`node/src/cli/`) by\n\
         `NEVERUST_UPDATE_DOCS=1 cargo test -p neverust --lib reference`; a test fails when this page and\n\
         the program disagree. Settings of `start` also come from the environment and a TOML file:\n\
         see the README's Configuration section.\n",
    );
    let help = |command: &mut clap::Command| command.render_long_help().to_string();
    let _ = write!(out, "\n## `neverust`\n\n```text\n{}```\n", help(&mut cli));
    for command in cli.get_subcommands_mut().filter(|c| c.get_name() != "help") {
        let name = command.get_name().to_string();
        let text = help(command);
        let _ = write!(out, "\n## `neverust {name}`\n\n```text\n{}```\n", text.trim_end().to_string() + "\n");
    }
    out
}

/// The API reference: each operation of `openapi.yaml` with its summary, description,
/// parameters and statuses. The document is ours and laid out one way (paths at two spaces,
/// methods at four, fields at six), which this reader follows; anchors (`&name`) and aliases
/// (`*name`) of parameters and responses are resolved.
pub fn api_markdown() -> String {
    let mut out = String::from(
        "# REST API reference\n\n\
         Generated from the OpenAPI document (`node/src/api/openapi.yaml`, served by every node at\n\
         `/api/archivist/v1/openapi.yaml`) by `NEVERUST_UPDATE_DOCS=1 cargo test -p neverust --lib\n\
         reference`; a test fails when this page and the document disagree. Every error is JSON\n\
         `{\"error\": \"...\"}`.\n",
    );
    for operation in operations(crate::api::OPENAPI_YAML) {
        let _ = write!(
            out,
            "\n## `{} {}`\n\n{}\n",
            operation.method.to_uppercase(),
            operation.path,
            operation.summary
        );
        if !operation.description.is_empty() {
            let _ = write!(out, "\n{}\n", operation.description);
        }
        if !operation.parameters.is_empty() {
            let _ = write!(out, "\nParameters: {}\n", operation.parameters.join(", "));
        }
        let statuses: Vec<String> = operation
            .responses
            .iter()
            .map(|(code, meaning)| match meaning {
                Some(meaning) => format!("`{code}` {meaning}"),
                None => {
                    let reason = code.parse().ok().and_then(|c| axum::http::StatusCode::from_u16(c).ok());
                    format!("`{code}` {}", reason.and_then(|r| r.canonical_reason()).unwrap_or("error"))
                }
            })
            .collect();
        let _ = write!(out, "\nAnswers: {}.\n", statuses.join("; "));
    }
    out
}

#[derive(Default, Clone)]
struct Operation {
    path: String,
    method: String,
    summary: String,
    description: String,
    parameters: Vec<String>,
    responses: Responses,
}

/// Status codes, each with its own description when it has one.
type Responses = Vec<(String, Option<String>)>;

/// The operations under `paths:`, in the document's order.
fn operations(yaml: &str) -> Vec<Operation> {
    let lines: Vec<&str> = yaml.lines().skip_while(|l| *l != "paths:").skip(1).collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut anchored_parameters: Vec<(String, Vec<String>)> = Vec::new();
    let mut anchored_responses: Vec<(String, Responses)> = Vec::new();
    let mut out: Vec<Operation> = Vec::new();
    let mut path = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let text = line.trim();
        if indent(line) == 0 && !text.is_empty() {
            break; // the next top-level section
        }
        if indent(line) == 2 && text.ends_with(':') {
            path = text.trim_end_matches(':').to_string();
        } else if indent(line) == 4 && text.ends_with(':') {
            let method = text.trim_end_matches(':').to_string();
            out.push(Operation { path: path.clone(), method, ..Operation::default() });
        } else if indent(line) == 6
            && let Some(operation) = out.last_mut()
        {
            let (key, value) = text.split_once(':').unwrap_or((text, ""));
            let value = value.trim();
            // The lines nested under this field.
            let mut end = i + 1;
            while end < lines.len() && (lines[end].trim().is_empty() || indent(lines[end]) > 6) {
                end += 1;
            }
            let block = &lines[i + 1..end];
            match key {
                "summary" => operation.summary = value.to_string(),
                "description" => {
                    operation.description = block.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
                }
                "parameters" => {
                    if let Some(alias) = value.strip_prefix('*') {
                        operation.parameters = lookup(&anchored_parameters, alias);
                    } else {
                        operation.parameters = block.iter().filter_map(|l| parameter(l)).collect();
                        if let Some(anchor) = value.strip_prefix('&') {
                            anchored_parameters.push((anchor.to_string(), operation.parameters.clone()));
                        }
                    }
                }
                "responses" => {
                    if let Some(alias) = value.strip_prefix('*') {
                        operation.responses = lookup(&anchored_responses, alias);
                    } else {
                        operation.responses = responses(block);
                        if let Some(anchor) = value.strip_prefix('&') {
                            anchored_responses.push((anchor.to_string(), operation.responses.clone()));
                        }
                    }
                }
                _ => {}
            }
            i = end;
            continue;
        }
        i += 1;
    }
    out
}

fn lookup<T: Clone>(anchors: &[(String, T)], name: &str) -> T {
    anchors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("openapi.yaml uses *{name} before defining &{name}"))
}

/// One parameter line (`- { name: k, in: query, required: true, ... }` or a `$ref`), as
/// `` `k` (query, required) ``.
fn parameter(line: &str) -> Option<String> {
    let item = line.trim().strip_prefix("- ")?;
    if let Some(reference) = item.strip_prefix("$ref:") {
        let name = reference.trim().trim_matches('"').rsplit('/').next()?.to_string();
        return Some(format!("`{name}` (path, required)"));
    }
    let field = |key: &str| {
        item.split([',', '{', '}'])
            .filter_map(|part| part.trim().strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().to_string())
            .next()
    };
    let name = field("name")?;
    let place = field("in").unwrap_or_default();
    let required = if field("required").as_deref() == Some("true") { ", required" } else { "" };
    Some(format!("`{name}` ({place}{required})"))
}

/// The statuses of a `responses:` block, each with its description when it has its own.
fn responses(block: &[&str]) -> Responses {
    let mut out = Vec::new();
    for (i, line) in block.iter().enumerate() {
        let text = line.trim();
        let Some(rest) = text.strip_prefix('"') else { continue };
        let Some((code, after)) = rest.split_once("\":") else { continue };
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let after = after.trim();
        let meaning = if let Some(inline) = after.strip_prefix("{ description:") {
            let text = inline.split(", content:").next().unwrap_or(inline);
            Some(text.trim().trim_end_matches('}').trim().to_string())
        } else if after.contains("$ref") {
            let name =
                after.rsplit('/').next().unwrap_or("").trim_matches(|c| c == '"' || c == '}' || c == ' ');
            (name != "Error").then(|| name.to_string())
        } else {
            block
                .get(i + 1)
                .and_then(|next| next.trim().strip_prefix("description:"))
                .map(|d| d.trim().to_string())
        };
        out.push((code.to_string(), meaning));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed page `docs/<name>`.
    fn page(name: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("docs").join(name)
    }

    /// Compares a generated page with the committed one, or writes it with `NEVERUST_UPDATE_DOCS=1`.
    fn check(name: &str, generated: &str) {
        let path = page(name);
        if std::env::var_os("NEVERUST_UPDATE_DOCS").is_some() {
            std::fs::write(&path, generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/{name} is out of date with the sources: run `NEVERUST_UPDATE_DOCS=1 cargo test -p neverust --lib reference` and commit it"
        );
    }

    #[test]
    fn cli_reference_is_current() {
        let page = cli_markdown();
        for command in ["start", "upload", "download", "deploy", "proving-key", "devnet"] {
            assert!(page.contains(&format!("## `neverust {command}`")), "{command}");
        }
        assert!(page.contains("--api-port <PORT>"));
        check("cli.md", &page);
    }

    #[test]
    fn api_reference_is_current() {
        let page = api_markdown();
        let operations = operations(crate::api::OPENAPI_YAML);
        assert!(operations.len() > 30, "{} operations", operations.len());
        for operation in &operations {
            assert!(!operation.summary.is_empty(), "{} {} has no summary", operation.method, operation.path);
            assert!(
                !operation.responses.is_empty(),
                "{} {} has no responses",
                operation.method,
                operation.path
            );
        }
        // The aliases share the originals' parameters and answers.
        let find = |method: &str, path: &str| {
            operations.iter().find(|o| o.method == method && o.path == path).unwrap().clone()
        };
        let upload = find("post", "/api/archivist/v1/data");
        let alias = find("post", "/api/v1/storage/store");
        assert_eq!(upload.responses, alias.responses);
        assert_eq!(upload.parameters, alias.parameters);
        assert!(upload.responses.iter().any(|(code, _)| code == "503"));
        check("api.md", &page);
    }
}
