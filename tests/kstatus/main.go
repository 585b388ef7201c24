// Command kstatus computes an object's status with the real kstatus library
// (sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute), the code Flux, Helm 4's --wait and
// cli-utils' apply use to decide whether a resource is ready.
//
//	kubectl get ftpserver NAME -o yaml | kstatus          # reads stdin
//	kstatus object.yaml                                   # or a file (YAML or JSON)
//
// It prints the status (InProgress, Current, Failed, Terminating, NotFound, Unknown), a tab and
// the library's message, and exits 0; it exits 2 when the input is not one object.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	var raw []byte
	var err error
	switch len(args) {
	case 0:
		raw, err = io.ReadAll(stdin)
	case 1:
		raw, err = os.ReadFile(args[0])
	default:
		return fmt.Errorf("usage: kstatus [FILE]  (reads one object as YAML or JSON; stdin without FILE)")
	}
	if err != nil {
		return err
	}
	// Through JSON and Unstructured's own decoder, so integers stay int64 as the API client's are
	// (kstatus reads metadata.generation as int64).
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("parsing the object: %w", err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return fmt.Errorf("parsing the object (give one object with kind and apiVersion, not a List): %w", err)
	}
	if u.IsList() {
		return fmt.Errorf("the input is a List: give one object")
	}
	if u.GetKind() == "" || u.GetAPIVersion() == "" {
		return fmt.Errorf("the input has no kind/apiVersion: give one Kubernetes object")
	}
	res, err := status.Compute(u)
	if err != nil {
		return fmt.Errorf("computing the status: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "%s\t%s\n", res.Status, res.Message)
	return err
}
