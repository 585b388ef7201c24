// Command flux-apicheck decodes Flux objects strictly into Flux's own API types: a field the type
// does not have, or a value of the wrong type, is an error. It stands in for the CRD schema of a
// controller the tests do not run (helm-controller, whose module is not available to build).
//
//	flux-apicheck FILE...   # YAML streams of HelmRelease and GitRepository objects
//
// It prints one line per object and exits 1 if any object fails, 2 on unusable input.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	helmv2 "github.com/fluxcd/helm-controller/api/v2"
	sourcev1 "github.com/fluxcd/source-controller/api/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: flux-apicheck FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		ok, err := checkFile(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "flux-apicheck: %s: %v\n", path, err)
			os.Exit(2)
		}
		failed = failed || !ok
	}
	if failed {
		os.Exit(1)
	}
}

func checkFile(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(f))
	ok, seen := true, 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return false, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta typeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return false, err
		}
		var target any
		switch meta.APIVersion + "/" + meta.Kind {
		case helmv2.GroupVersion.String() + "/HelmRelease":
			target = &helmv2.HelmRelease{}
		case sourcev1.GroupVersion.String() + "/GitRepository":
			target = &sourcev1.GitRepository{}
		default:
			return false, fmt.Errorf("%s %s is not a kind this check knows", meta.APIVersion, meta.Kind)
		}
		seen++
		if err := yaml.UnmarshalStrict(doc, target); err != nil {
			fmt.Printf("FAIL %s %s: %v\n", meta.Kind, path, err)
			ok = false
			continue
		}
		fmt.Printf("ok   %s %s\n", meta.Kind, path)
	}
	if seen == 0 {
		return false, errors.New("no objects")
	}
	return ok, nil
}
