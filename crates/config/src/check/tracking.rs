//! `[tracking]`: where a finished run is logged besides its run folder.

use crate::Diagnostic;
use crate::plan::TrackingPlan;
use crate::schema::RawTracking;
use crate::spanned::Spanned;

use super::Checker;

impl Checker<'_> {
    /// `[tracking]`: an MLflow server's HTTP address.
    pub(super) fn check_tracking(
        &self,
        raw: Spanned<RawTracking>,
    ) -> Result<TrackingPlan, Diagnostic> {
        let section = raw.span();
        let raw = raw.into_inner();
        let Some(mlflow) = raw.mlflow else {
            return Err(self
                .error(section, "`[tracking]` names no tracking server")
                .with_hint(
                    "add `mlflow = \"http://127.0.0.1:5000\"` (an MLflow tracking server)",
                ));
        };
        let uri = mlflow.get_ref().trim();
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(self
                .error(mlflow.span(), format!("`mlflow = {uri:?}` is not an HTTP address"))
                .with_hint("graft logs to a tracking server over HTTP, e.g. mlflow = \"http://127.0.0.1:5000\" (start one with `mlflow server`)"));
        }
        Ok(TrackingPlan {
            mlflow: uri.to_owned(),
            experiment: raw.experiment.map(Spanned::into_inner),
        })
    }
}
