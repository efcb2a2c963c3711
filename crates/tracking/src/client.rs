//! The few MLflow REST endpoints graft needs (MLflow's REST API 2.0, as `mlflow server` serves it).

use std::time::Duration;

use serde_json::{Value, json};

use crate::TrackingError;
use crate::flatten::Series;

/// MLflow's limits per `log-batch` request.
const BATCH_METRICS: usize = 1000;
const BATCH_PARAMS: usize = 100;

/// A tracking server at one URI. Honours `MLFLOW_TRACKING_TOKEN` (a bearer token), as MLflow's clients do.
#[derive(Debug)]
pub struct MlflowClient {
    uri: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl MlflowClient {
    /// A client for `uri` (`http://…` or `https://…`); nothing is sent yet.
    pub fn new(uri: &str) -> Result<MlflowClient, TrackingError> {
        let uri = uri.trim_end_matches('/');
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(TrackingError::BadUri {
                uri: uri.to_owned(),
                reason: "graft logs to a tracking server over HTTP".to_owned(),
                hint: "give the server's address, e.g. http://127.0.0.1:5000 (start one with `mlflow server`); \
                       file and database URIs need MLflow's Python client"
                    .to_owned(),
            });
        }
        let agent = ureq::Agent::config_builder()
            // MLflow explains a refusal in the body of its 4xx answers: read them rather than fail early.
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Ok(MlflowClient {
            uri: uri.to_owned(),
            agent,
            token: std::env::var("MLFLOW_TRACKING_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        })
    }

    /// The id of the experiment `name`, created when there is none.
    pub fn experiment_id(&self, name: &str) -> Result<String, TrackingError> {
        let endpoint = "experiments/get-by-name";
        let url = self.api(endpoint);
        let request = self.agent.get(&url).query("experiment_name", name);
        let (status, body) = self.answer(endpoint, self.authorised(request).call())?;
        if status == 200 {
            return field(&body, "/experiment/experiment_id", endpoint, &self.uri);
        }
        if body.get("error_code").and_then(Value::as_str) != Some("RESOURCE_DOES_NOT_EXIST") {
            return Err(self.refused(endpoint, status, &body));
        }
        let created = self.post("experiments/create", &json!({ "name": name }))?;
        field(&created, "/experiment_id", "experiments/create", &self.uri)
    }

    /// A new run in the experiment: its id and artefact URI.
    pub fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        start_time: i64,
        tags: &[(String, String)],
    ) -> Result<(String, String), TrackingError> {
        let endpoint = "runs/create";
        let body = self.post(
            endpoint,
            &json!({
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": start_time,
                "tags": tags.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
            }),
        )?;
        Ok((
            field(&body, "/run/info/run_id", endpoint, &self.uri)?,
            field(&body, "/run/info/artifact_uri", endpoint, &self.uri)?,
        ))
    }

    /// Parameters, metrics and series, in as many `log-batch` requests as MLflow's limits need.
    pub fn log_batch(
        &self,
        run_id: &str,
        params: &[(String, String)],
        metrics: &[(String, f64)],
        series: &[Series],
        timestamp: i64,
    ) -> Result<(), TrackingError> {
        for chunk in params.chunks(BATCH_PARAMS) {
            let params: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect();
            self.post(
                "runs/log-batch",
                &json!({ "run_id": run_id, "params": params }),
            )?;
        }
        let points: Vec<Value> = metrics
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v, "timestamp": timestamp, "step": 0 }))
            .chain(series.iter().flat_map(|s| {
                s.points.iter().map(move |&(step, v)| {
                    json!({ "key": s.key, "value": v, "timestamp": timestamp, "step": step })
                })
            }))
            .collect();
        for chunk in points.chunks(BATCH_METRICS) {
            self.post(
                "runs/log-batch",
                &json!({ "run_id": run_id, "metrics": chunk }),
            )?;
        }
        Ok(())
    }

    /// Uploads `bytes` as the artefact `name` of the run, through the server's artefact proxy
    /// (`mlflow-artifacts:` URIs) or into a local artefact store (`file:` URIs and paths).
    pub fn upload_artifact(
        &self,
        run_id: &str,
        artifact_uri: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), TrackingError> {
        if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/1/<run>/artifacts`, or with the server's address after `//`.
            let path = match rest.strip_prefix("//") {
                Some(with_host) => with_host.split_once('/').map_or("", |(_, p)| p),
                None => rest.trim_start_matches('/'),
            };
            let endpoint = "mlflow-artifacts/artifacts";
            let url = format!("{}/api/2.0/{endpoint}/{path}/{name}", self.uri);
            let request = self
                .agent
                .put(&url)
                .header("Content-Type", "application/octet-stream");
            let (status, body) = self.answer(endpoint, self.authorised(request).send(bytes))?;
            return if status == 200 {
                Ok(())
            } else {
                Err(self.refused(endpoint, status, &body))
            };
        }
        let local = artifact_uri
            .strip_prefix("file://")
            .or_else(|| artifact_uri.starts_with('/').then_some(artifact_uri));
        let Some(dir) = local else {
            return Err(TrackingError::ArtefactStore {
                run_id: run_id.to_owned(),
                artifact_uri: artifact_uri.to_owned(),
                hint: "let the server proxy artefacts (`mlflow server` does by default; not with \
                       --no-serve-artifacts), or log with MLflow's Python client, which talks to the store"
                    .to_owned(),
            });
        };
        let dir = std::path::Path::new(dir);
        let path = dir.join(name);
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&path, bytes))
            .map_err(|source| TrackingError::Io { path, source })
    }

    /// Marks the run finished.
    pub fn finish_run(&self, run_id: &str, end_time: i64) -> Result<(), TrackingError> {
        self.post(
            "runs/update",
            &json!({ "run_id": run_id, "status": "FINISHED", "end_time": end_time }),
        )?;
        Ok(())
    }

    fn api(&self, endpoint: &str) -> String {
        format!("{}/api/2.0/mlflow/{endpoint}", self.uri)
    }

    fn authorised<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// POSTs `body` as JSON and returns the answer, refusing any status but 200.
    fn post(&self, endpoint: &str, body: &Value) -> Result<Value, TrackingError> {
        let request = self.authorised(self.agent.post(&self.api(endpoint)));
        let (status, answer) = self.answer(endpoint, request.send_json(body))?;
        if status == 200 {
            Ok(answer)
        } else {
            Err(self.refused(endpoint, status, &answer))
        }
    }

    /// The status and JSON body of an answer (a body that is not JSON becomes `{"message": body}`).
    fn answer(
        &self,
        endpoint: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Value), TrackingError> {
        let mut response = response.map_err(|e| TrackingError::Unreachable {
            uri: self.uri.clone(),
            reason: format!("{endpoint}: {e}"),
            hint: "check the address and that `mlflow server` is running there".to_owned(),
        })?;
        let status = response.status().as_u16();
        let text =
            response
                .body_mut()
                .read_to_string()
                .map_err(|e| TrackingError::Unreachable {
                    uri: self.uri.clone(),
                    reason: format!("{endpoint}: reading the answer: {e}"),
                    hint: "check that the address is an MLflow tracking server".to_owned(),
                })?;
        let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "message": text }));
        Ok((status, body))
    }

    fn refused(&self, endpoint: &str, status: u16, body: &Value) -> TrackingError {
        let message = match (
            body.get("error_code").and_then(Value::as_str),
            body.get("message").and_then(Value::as_str),
        ) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (None, Some(message)) => message.chars().take(500).collect(),
            _ => body.to_string().chars().take(500).collect(),
        };
        TrackingError::Server {
            uri: self.uri.clone(),
            endpoint: endpoint.to_owned(),
            status,
            message,
        }
    }
}

/// A string at `pointer` in an answer (MLflow sends ids as strings).
fn field(body: &Value, pointer: &str, endpoint: &str, uri: &str) -> Result<String, TrackingError> {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| TrackingError::Server {
            uri: uri.to_owned(),
            endpoint: endpoint.to_owned(),
            status: 200,
            message: format!("the answer has no `{pointer}`: {body}"),
        })
}
