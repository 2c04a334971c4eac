package deploy_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The parts of the Kubernetes objects the checks read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	StringData map[string]string `yaml:"stringData"`
	Resources  []string          `yaml:"resources"` // a Kustomization's
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec struct {
				Resources struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type podSpec struct {
	ShareProcessNamespace bool `yaml:"shareProcessNamespace"`
	SecurityContext       struct {
		RunAsNonRoot bool `yaml:"runAsNonRoot"`
		RunAsUser    int  `yaml:"runAsUser"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
			Items      []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe  *probeSpec `yaml:"livenessProbe"`
	ReadinessProbe *probeSpec `yaml:"readinessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
}

type probeSpec struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

// decodeAll decodes every document of a YAML file.
func decodeAll(t *testing.T, path string) []k8sObject {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(false)
	var out []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if o.Kind == "" || o.APIVersion == "" {
			t.Fatalf("%s: a document without kind or apiVersion", path)
		}
		out = append(out, o)
	}
}

// flagValue returns the value of -name=value or "-name value" in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "-"+name+"="); ok {
			return v, true
		}
		if a == "-"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// The manifests run ledgerd as a sidecar of an application: its ledger on
// a persistent volume of the StatefulSet, its token and connection string
// from a Secret that exists, probes on /healthz and /readyz on the port it
// listens on (every address: the kubelet probes the pod's), resource
// requests, a shared process namespace for the process probe, and no root.
func TestKubernetesManifests(t *testing.T) {
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	objs := map[string]k8sObject{}
	var kustomized []string
	for _, f := range files {
		for _, o := range decodeAll(t, f) {
			if o.Kind == "Kustomization" {
				kustomized = o.Resources
				continue
			}
			objs[o.Kind+"/"+o.Metadata.Name] = o
		}
	}
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(kustomized, b) {
			t.Errorf("kustomization.yaml does not list %s", b)
		}
	}
	var sts *k8sObject
	for _, o := range objs {
		if o.Kind == "StatefulSet" {
			sts = &o
		}
	}
	if sts == nil {
		t.Fatal("no StatefulSet")
	}
	pod := sts.Spec.Template.Spec
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("replicas %v: one ledger file belongs to one slot, want 1", sts.Spec.Replicas)
	}
	if !pod.ShareProcessNamespace {
		t.Error("shareProcessNamespace is not set: ledgerd would not see the application's pid and evict its shapes as process_gone")
	}
	if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser == 0 {
		t.Errorf("the pod may run as root: %+v", pod.SecurityContext)
	}
	var led *container
	for i, c := range pod.Containers {
		if c.Name == "ledgerd" {
			led = &pod.Containers[i]
		}
		if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" {
			t.Errorf("container %s has no cpu and memory requests", c.Name)
		}
		if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
			t.Errorf("container %s allows privilege escalation", c.Name)
		}
	}
	if led == nil || len(pod.Containers) < 2 {
		t.Fatalf("want ledgerd next to an application container, got %d containers", len(pod.Containers))
	}

	listen, _ := flagValue(led.Args, "listen")
	_, port, _ := strings.Cut(listen, ":")
	if host, _, _ := strings.Cut(listen, ":"); host != "" && host != "0.0.0.0" {
		t.Errorf("-listen=%s: the kubelet probes the pod's address, listen on :PORT", listen)
	}
	portName := ""
	for _, p := range led.Ports {
		if p.ContainerPort > 0 && port == strconv.Itoa(p.ContainerPort) {
			portName = p.Name
		}
	}
	if portName == "" {
		t.Errorf("no container port for -listen=%s", listen)
	}
	for what, pr := range map[string]*probeSpec{"/healthz": led.LivenessProbe, "/readyz": led.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != what {
			t.Errorf("probe of %s missing: %+v", what, pr)
			continue
		}
		n, _ := strconv.Atoi(port)
		if p := pr.HTTPGet.Port; p != portName && p != port && p != n {
			t.Errorf("probe of %s on port %v, ledgerd listens on %s", what, p, listen)
		}
	}

	mountOf := func(c *container, path string) string {
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
				return m.Name
			}
		}
		return ""
	}
	db, _ := flagValue(led.Args, "db")
	dbVol := mountOf(led, db)
	claimed := false
	for _, v := range sts.Spec.VolumeClaimTemplates {
		claimed = claimed || (v.Metadata.Name == dbVol && dbVol != "" && v.Spec.Resources.Requests["storage"] != "")
	}
	if !claimed {
		t.Errorf("-db=%s is not on a volume of the volumeClaimTemplates", db)
	}

	secretOK := func(name, key string) bool {
		s, ok := objs["Secret/"+name]
		_, has := s.StringData[key]
		return ok && has
	}
	tokenFile, _ := flagValue(led.Args, "token-file")
	tokVol := mountOf(led, tokenFile)
	found := false
	for _, v := range pod.Volumes {
		if v.Name != tokVol || v.Secret == nil {
			continue
		}
		for _, it := range v.Secret.Items {
			mount := ""
			for _, m := range led.VolumeMounts {
				if m.Name == tokVol {
					mount = m.MountPath
				}
			}
			if filepath.Join(mount, it.Path) == tokenFile && secretOK(v.Secret.SecretName, it.Key) {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("-token-file=%s is not a key of a Secret in the manifests", tokenFile)
	}
	pgFromSecret := false
	for _, e := range led.Env {
		if e.Name == "LEDGERD_PG_URL" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			pgFromSecret = secretOK(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
		}
	}
	if !pgFromSecret {
		t.Error("LEDGERD_PG_URL does not come from a Secret in the manifests")
	}
	for _, c := range pod.Containers {
		if c.Name == "ledgerd" {
			continue
		}
		for _, e := range c.Env {
			if e.Name == "LEDGERD_TOKEN_FILE" && e.Value != tokenFile {
				t.Errorf("container %s reads the token at %s, ledgerd at %s", c.Name, e.Value, tokenFile)
			}
		}
	}
}
