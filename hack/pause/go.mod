// The pod sandbox ("pause") program of the local cluster's real node: the first process of every
// pod, holding its namespaces. No image can be pulled here, so the project builds its own
// (scripts/cluster/images.sh). Standard library only, so go.sum stays empty.
module github.com/ftp-operator/hack/pause

go 1.26.0
