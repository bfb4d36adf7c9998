package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/dab-assets/dab/internal/config"
	"github.com/dab-assets/dab/internal/storage"
)

// iamActionOf maps each S3 call dab's storage code can make (the methods of
// storage.S3API and storage.PresignAPI) to the IAM action that allows it.
// A presigned URL sends nothing when it is made; it is the request of
// whoever fetches it, made with dab's credentials, so it needs the action
// of the request it presigns.
var iamActionOf = map[string]string{
	"PresignGetObject":        "s3:GetObject",
	"PutObject":               "s3:PutObject",
	"CreateMultipartUpload":   "s3:PutObject",
	"UploadPart":              "s3:PutObject",
	"CompleteMultipartUpload": "s3:PutObject",
	"GetObject":               "s3:GetObject",
	"HeadObject":              "s3:GetObject",
	"AbortMultipartUpload":    "s3:AbortMultipartUpload",
	"ListParts":               "s3:ListMultipartUploadParts",
	"ListObjectsV2":           "s3:ListBucket",
	"CopyObject":              "s3:PutObject",
	"UploadPartCopy":          "s3:PutObject",
	"DeleteObject":            "s3:DeleteObject",
}

func loadTemplate(t *testing.T) *yaml.Node {
	t.Helper()
	b, err := os.ReadFile("../../deploy/cloudformation/dab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("parse the template: %v", err)
	}
	return doc.Content[0]
}

func mapGet(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func keys(n *yaml.Node) map[string]bool {
	out := map[string]bool{}
	if n == nil {
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		out[n.Content[i].Value] = true
	}
	return out
}

// walk visits every node with its parent key.
func walk(n *yaml.Node, visit func(n *yaml.Node, key string), key string) {
	visit(n, key)
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			walk(n.Content[i+1], visit, n.Content[i].Value)
		}
		return
	}
	for _, c := range n.Content {
		walk(c, visit, key)
	}
}

var subRef = regexp.MustCompile(`\$\{([^}!]+)\}`)

// TestCloudFormationResolves checks that every Ref, GetAtt, Sub variable and
// Condition in the template names something the template defines.
func TestCloudFormationResolves(t *testing.T) {
	t.Parallel()
	root := loadTemplate(t)
	params, resources, conditions := keys(mapGet(root, "Parameters")), keys(mapGet(root, "Resources")), keys(mapGet(root, "Conditions"))
	pseudo := map[string]bool{"AWS::Region": true, "AWS::AccountId": true, "AWS::Partition": true, "AWS::StackName": true, "AWS::StackId": true, "AWS::URLSuffix": true, "AWS::NoValue": true}
	refOK := func(name string) bool { return params[name] || resources[name] || pseudo[name] }
	var problems []string
	walk(root, func(n *yaml.Node, key string) {
		switch n.Tag {
		case "!Ref":
			if !refOK(n.Value) {
				problems = append(problems, "!Ref "+n.Value)
			}
		case "!GetAtt":
			res := strings.SplitN(n.Value, ".", 2)[0]
			if n.Kind == yaml.SequenceNode {
				res = n.Content[0].Value
			}
			if !resources[res] {
				problems = append(problems, "!GetAtt "+n.Value)
			}
		case "!Sub":
			s := n.Value
			if n.Kind == yaml.SequenceNode {
				s = n.Content[0].Value
			}
			for _, m := range subRef.FindAllStringSubmatch(s, -1) {
				name := strings.SplitN(m[1], ".", 2)[0]
				if strings.Contains(m[1], ".") && !strings.HasPrefix(m[1], "AWS::") {
					if !resources[name] {
						problems = append(problems, "!Sub ${"+m[1]+"}")
					}
				} else if !refOK(m[1]) {
					problems = append(problems, "!Sub ${"+m[1]+"}")
				}
			}
		case "!If":
			if !conditions[n.Content[0].Value] {
				problems = append(problems, "!If "+n.Content[0].Value)
			}
		case "!Condition":
			if !conditions[n.Value] {
				problems = append(problems, "!Condition "+n.Value)
			}
		}
		if key == "Condition" && n.Kind == yaml.ScalarNode && n.Tag == "!!str" && !conditions[n.Value] {
			problems = append(problems, "Condition: "+n.Value)
		}
	}, "")
	if len(problems) > 0 {
		t.Fatalf("unresolved names in the template: %v", problems)
	}
	if len(resources) < 8 || len(conditions) < 5 {
		t.Fatalf("template parsed to %d resources and %d conditions", len(resources), len(conditions))
	}
}

// TestCloudFormationSecurity checks what a security review would flag.
func TestCloudFormationSecurity(t *testing.T) {
	t.Parallel()
	root := loadTemplate(t)
	b, _ := os.ReadFile("../../deploy/cloudformation/dab.yaml")
	text := string(b)
	for _, want := range []string{"BucketEncryption", "VersioningConfiguration", "BlockPublicAcls: true", "RestrictPublicBuckets: true",
		"'aws:SecureTransport': 'false'", "AbortIncompleteMultipartUpload", "TransitEncryptionEnabled: true", "AtRestEncryptionEnabled: true",
		"NoEcho: true", "Default: InstanceRole", "AWS::SecretsManager::Secret"} {
		if !strings.Contains(text, want) {
			t.Errorf("template lacks %s", want)
		}
	}
	// No secret in the Outputs.
	walk(mapGet(root, "Outputs"), func(n *yaml.Node, key string) {
		if strings.Contains(n.Value, "SecretAccessKey") || strings.Contains(n.Value, "AuthToken") {
			t.Errorf("an output exposes a secret: %s", n.Value)
		}
	}, "")
}

// TestIAMPolicyMatchesStorageCalls: the worker policy allows exactly the S3
// actions of the calls storage.S3API makes, no more, no fewer.
func TestIAMPolicyMatchesStorageCalls(t *testing.T) {
	t.Parallel()
	want := map[string]bool{}
	for _, api := range []reflect.Type{reflect.TypeFor[storage.S3API](), reflect.TypeFor[storage.PresignAPI]()} {
		for i := range api.NumMethod() {
			m := api.Method(i).Name
			action, ok := iamActionOf[m]
			if !ok {
				t.Fatalf("storage.%s calls %s, which has no IAM action in this test's map: add it here and to deploy/cloudformation/dab.yaml", api.Name(), m)
			}
			want[action] = true
		}
	}
	if !want["s3:GetObject"] {
		t.Fatal("presigned downloads need s3:GetObject: storage.PresignAPI must presign GetObject")
	}
	got := map[string]bool{}
	policy := mapGet(mapGet(mapGet(mapGet(loadTemplate(t), "Resources"), "WorkerPolicy"), "Properties"), "PolicyDocument")
	for _, st := range mapGet(policy, "Statement").Content {
		if st.Tag == "!If" && len(st.Content) == 3 {
			st = st.Content[1] // a statement that applies under a condition
		}
		if mapGet(st, "Effect") == nil || mapGet(st, "Effect").Value != "Allow" {
			continue
		}
		for _, a := range mapGet(st, "Action").Content {
			got[a.Value] = true
		}
	}
	list := func(m map[string]bool) string {
		var s []string
		for k := range m {
			s = append(s, k)
		}
		sort.Strings(s)
		return strings.Join(s, ", ")
	}
	if list(got) != list(want) {
		t.Fatalf("worker policy allows [%s]; the storage code needs exactly [%s]", list(got), list(want))
	}
}

// TestSystemdUnits checks the units' directives and lets systemd-analyze verify them.
func TestSystemdUnits(t *testing.T) {
	t.Parallel()
	for role, cmd := range map[string]string{"watcher": "watch", "worker": "work"} {
		path := "../../deploy/systemd/dab-" + role + ".service"
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		unit := string(b)
		for _, want := range []string{"ExecStart=/usr/local/bin/dab " + cmd + "\n", "EnvironmentFile=/etc/dab/dab.env", "Restart=on-failure",
			"User=dab", "NoNewPrivileges=true", "ProtectSystem=strict", "ReadWritePaths=/var/lib/dab /srv/dab", "KillSignal=SIGTERM"} {
			if !strings.Contains(unit, want) {
				t.Errorf("%s lacks %q", path, strings.TrimSpace(want))
			}
		}
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Fatal("systemd-analyze is needed to verify the units: apt-get install -y systemd (or run `make test`)")
		}
		// Verify a copy that runs the binary under test and tolerates the
		// missing env file (the sample is installed by the operator).
		tmp := filepath.Join(t.TempDir(), "dab-"+role+".service")
		unit = strings.ReplaceAll(unit, "/usr/local/bin/dab", dabBin)
		unit = strings.ReplaceAll(unit, "EnvironmentFile=/etc", "EnvironmentFile=-/etc")
		os.WriteFile(tmp, []byte(unit), 0o644)
		if out, err := exec.Command(analyze, "verify", "--man=no", tmp).CombinedOutput(); err != nil {
			t.Errorf("systemd-analyze verify %s: %v\n%s", path, err, out)
		}
	}
}

// TestComposeUsesRealSettings: every DAB_/AWS_ variable the compose file
// sets is one dab reads.
func TestComposeUsesRealSettings(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../deploy/container/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
			Image       string            `yaml:"image"`
			Build       any               `yaml:"build"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"AWS_DEFAULT_REGION": true}
	for _, s := range config.Settings() {
		known[s.Env] = true
	}
	for _, name := range []string{"redis", "s3", "dab"} {
		if _, ok := doc.Services[name]; !ok {
			t.Fatalf("compose.yaml has no %s service", name)
		}
	}
	for name, svc := range doc.Services {
		if svc.Build == nil {
			continue
		}
		for k := range svc.Environment {
			if (strings.HasPrefix(k, "DAB_") || strings.HasPrefix(k, "AWS_")) && !known[k] {
				t.Errorf("service %s sets %s, which dab does not read", name, k)
			}
		}
	}
}

// TestContainerBuildStage runs the Dockerfile's build stage script (there is
// no Docker engine here) and checks the result is a static binary that runs.
func TestContainerBuildStage(t *testing.T) {
	t.Parallel()
	df, err := os.ReadFile("../../deploy/container/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"AS build", "deploy/container/build.sh", "USER ", "FROM gcr.io/distroless/static"} {
		if !strings.Contains(string(df), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	out := filepath.Join(t.TempDir(), "dab")
	cmd := exec.Command("sh", "deploy/container/build.sh", out)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build stage: %v\n%s", err, b)
	}
	if b, err := exec.Command(out, "help").CombinedOutput(); err != nil || !strings.Contains(string(b), "dab: Digital Asset Banking") {
		t.Fatalf("built binary: %v %s", err, b)
	}
	if b, err := exec.Command("file", out).CombinedOutput(); err == nil && !strings.Contains(string(b), "statically linked") {
		t.Fatalf("not a static binary: %s", b)
	}
}
