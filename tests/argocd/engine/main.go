// Command argocd-health computes an object's health with Argo CD's own code, the path its
// application controller takes (controller/health.go): the resource customizations are read from
// an argocd-cm ConfigMap by Argo CD's settings manager (util/settings), and the object goes through
// gitops-engine's health.GetResourceHealth with those overrides (util/lua runs the Lua health
// script in Argo CD's gopher-lua VM).
//
//	argocd-health ARGOCD_CM.yaml [OBJECT]   # OBJECT is a file (YAML or JSON); stdin without it
//
// It prints the health status (Healthy, Progressing, Degraded, Suspended, Missing, Unknown), a tab
// and the message, and exits 0; it exits 2 when the input is unusable or the script fails.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
	"github.com/argoproj/gitops-engine/pkg/health"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"
)

// The namespace Argo CD runs in; the settings manager only reads argocd-cm from there.
const argoNamespace = "argocd"

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(2)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) < 1 || len(args) > 2 {
		return errors.New("usage: argocd-health ARGOCD_CM.yaml [OBJECT]  (the object as YAML or JSON; stdin without OBJECT)")
	}
	cm, err := readConfigMap(args[0])
	if err != nil {
		return err
	}
	var raw []byte
	if len(args) == 2 {
		raw, err = os.ReadFile(args[1])
	} else {
		raw, err = io.ReadAll(stdin)
	}
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(raw, &obj.Object); err != nil {
		return fmt.Errorf("the object is neither YAML nor JSON: %w", err)
	}
	if obj.GetKind() == "" {
		return errors.New("the object has no kind")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The settings manager reads argocd-cm through a client; a fake clientset holding just that
	// ConfigMap is what `argocd admin settings` uses offline too.
	mgr := settings.NewSettingsManager(ctx, fake.NewClientset(cm), argoNamespace)
	overrides, err := mgr.GetResourceOverrides()
	if err != nil {
		return fmt.Errorf("reading resource customizations from argocd-cm: %w", err)
	}
	hs, err := health.GetResourceHealth(obj, lua.ResourceHealthOverrides(overrides))
	if err != nil {
		return err
	}
	if hs == nil {
		// No health check of any kind: Argo CD then leaves the resource without health, which
		// for a custom resource means it never waits on it.
		return fmt.Errorf("argo CD has no health check for %s", obj.GroupVersionKind())
	}
	_, err = fmt.Fprintf(stdout, "%s\t%s\n", hs.Status, hs.Message)
	return err
}

func readConfigMap(path string) (*corev1.ConfigMap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{}
	if err := yaml.Unmarshal(raw, cm); err != nil {
		return nil, fmt.Errorf("%s is not a ConfigMap: %w", path, err)
	}
	if cm.Name != "argocd-cm" {
		return nil, fmt.Errorf("%s holds ConfigMap %q; Argo CD reads its settings from argocd-cm", path, cm.Name)
	}
	// Argo CD finds its ConfigMap by name in its own namespace.
	cm.Namespace = argoNamespace
	return cm, nil
}
