//! `ftp_operator_api_writes_total`: every write the operator sends the apiserver (applies,
//! deletes, status patches, Events), by kind. A quiet cluster should see none.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// The writes counter, shared by everything that writes.
#[derive(Clone, Debug, Default)]
pub struct ApiWrites(pub Family<KindLabel, Counter>);

impl ApiWrites {
    pub fn record(&self, kind: &str) {
        self.0
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .inc();
    }
}
