// Command kastor-controlplane runs a real Kubernetes control plane in one process for
// Kastor's tests: etcd (embedded), kube-apiserver, kube-controller-manager and
// kube-scheduler, all from the Kubernetes release pinned in go.mod.
//
// Why one process built from modules: CI machines have no container runtime (so no
// kind) and cannot download release binaries (so no envtest assets), but they reach
// the Go module proxy. Composing the components' public app packages gives the same
// code the release binaries run, with real TLS, client-certificate and
// service-account authentication, and the RBAC authorizer.
//
// Everything binds 127.0.0.1 only. It writes an admin kubeconfig (client certificate
// in group system:masters), prints one line starting with "kastor-controlplane ready"
// once /readyz passes and the controllers have created the default ServiceAccount, and
// stops cleanly on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/klog/v2"
	apiserverapp "k8s.io/kubernetes/cmd/kube-apiserver/app"
	apiserveroptions "k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
)

const host = "127.0.0.1"

// serviceCIDR is --service-cluster-ip-range; kubernetesServiceIP is its first address,
// the ClusterIP the apiserver gives the `kubernetes` Service.
const (
	serviceCIDR         = "10.96.0.0/16"
	kubernetesServiceIP = "10.96.0.1"
)

func main() {
	dataDir := flag.String("data-dir", "", "directory for etcd data, certificates and kubeconfigs (required)")
	kubeconfigOut := flag.String("kubeconfig-out", "", "where to write the admin kubeconfig (default <data-dir>/admin.kubeconfig)")
	port := flag.Int("port", 0, "kube-apiserver secure port on 127.0.0.1; 0 picks a free one")
	verbosity := flag.String("v", "0", "klog verbosity of the Kubernetes components")
	flag.Parse()
	if *dataDir == "" {
		fatal(errors.New("--data-dir is required: pass a directory for etcd data and certificates"))
	}
	if *kubeconfigOut == "" {
		*kubeconfigOut = filepath.Join(*dataDir, "admin.kubeconfig")
	}
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	_ = klogFlags.Set("v", *verbosity)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, *dataDir, *kubeconfigOut, *port); err != nil {
		fatal(err)
	}
	fmt.Println("kastor-controlplane stopped")
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "kastor-controlplane: %v\n", err)
	os.Exit(1)
}

// run starts every component, reports readiness, and on ctx's end stops them in
// reverse order: the controllers and scheduler, then the apiserver, then etcd.
func run(ctx context.Context, dataDir, kubeconfigOut string, port int) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	apiListener, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("cannot listen on %s:%d for kube-apiserver (pass --port 0 for a free port): %w", host, port, err)
	}
	apiPort := apiListener.Addr().(*net.TCPAddr).Port
	server := fmt.Sprintf("https://%s:%d", host, apiPort)

	p, err := writePKI(filepath.Join(dataDir, "pki"))
	if err != nil {
		return fmt.Errorf("generating certificates: %w", err)
	}
	for name, user := range map[string]clientUser{
		kubeconfigOut: p.admin, p.dir + "/controller-manager.kubeconfig": p.controllerManager,
		p.dir + "/scheduler.kubeconfig": p.scheduler,
	} {
		if err := writeKubeconfig(name, server, p.caPEM, user); err != nil {
			return err
		}
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(dataDir, "etcd"))
	if err != nil {
		return fmt.Errorf("starting embedded etcd: %w", err)
	}
	defer etcd.Close()

	// Flags first, in this order (see prepareControllerManager).
	runControllerManager, err := prepareControllerManager(p)
	if err != nil {
		return err
	}
	runScheduler, err := prepareScheduler(p)
	if err != nil {
		return err
	}
	runAPIServer, err := prepareAPIServer(apiListener, apiPort, etcdURL, p)
	if err != nil {
		return err
	}

	// Each component gets its own context so that shutdown is ordered.
	apiCtx, stopAPI := context.WithCancel(context.Background())
	defer stopAPI()
	ctrlCtx, stopCtrl := context.WithCancel(context.Background())
	defer stopCtrl()

	var apiWG, ctrlWG sync.WaitGroup
	failed := make(chan error, 3)
	launch := func(name string, wg *sync.WaitGroup, c context.Context, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(c); err != nil && c.Err() == nil {
				failed <- fmt.Errorf("%s: %w", name, err)
			} else if c.Err() == nil {
				failed <- fmt.Errorf("%s returned before shutdown", name)
			}
		}()
	}
	launch("kube-apiserver", &apiWG, apiCtx, runAPIServer)

	admin, err := clientcmd.BuildConfigFromFlags("", kubeconfigOut)
	if err != nil {
		return err
	}
	if err := waitReady(ctx, failed, admin); err != nil {
		return startupError(ctx, err)
	}
	launch("kube-controller-manager", &ctrlWG, ctrlCtx, runControllerManager)
	launch("kube-scheduler", &ctrlWG, ctrlCtx, runScheduler)
	if err := waitDefaultServiceAccount(ctx, failed, admin); err != nil {
		return startupError(ctx, err)
	}
	fmt.Printf("kastor-controlplane ready server=%s kubeconfig=%s etcd=%s\n", server, kubeconfigOut, etcdURL)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-failed:
	}
	deadline := time.After(30 * time.Second)
	stopCtrl()
	if !waitGroup(&ctrlWG, deadline) {
		return errors.Join(runErr, errors.New("kube-controller-manager or kube-scheduler did not stop within 30s"))
	}
	stopAPI()
	if !waitGroup(&apiWG, deadline) {
		return errors.Join(runErr, errors.New("kube-apiserver did not stop within 30s"))
	}
	return runErr
}

// startupError names a stop signal during startup as such, not as a readiness failure.
func startupError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.New("stopped by a signal before the control plane was ready")
	}
	return err
}

// waitGroup reports whether wg finished before deadline fired.
func waitGroup(wg *sync.WaitGroup, deadline <-chan time.Time) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-deadline:
		return false
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startEtcd runs a single-member etcd whose client and peer URLs are free ports on
// 127.0.0.1 (etcd cannot listen on port 0 and report it, so ports are picked first).
func startEtcd(dir string) (*embed.Etcd, string, error) {
	clientPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	peerPort, err := freePort()
	if err != nil {
		return nil, "", err
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(peerPort))}
	cfg := embed.NewConfig()
	cfg.Name = "kastor"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ListenMetricsUrls = nil
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", err
	case <-time.After(60 * time.Second):
		e.Close()
		return nil, "", errors.New("etcd did not become ready within 60s")
	}
	return e, clientURL.String(), nil
}

// parseInto parses args into the named flag sets of a component's options.
func parseInto(component string, fss cliflag.NamedFlagSets, args []string) error {
	fs := pflag.NewFlagSet(component, pflag.ContinueOnError)
	for _, f := range fss.FlagSets {
		fs.AddFlagSet(f)
	}
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%s flags: %w", component, err)
	}
	return nil
}

// prepareAPIServer parses kube-apiserver's flags; the returned function runs it.
func prepareAPIServer(l net.Listener, port int, etcdURL string, p *pki) (func(context.Context) error, error) {
	s := apiserveroptions.NewServerRunOptions()
	err := parseInto("kube-apiserver", s.Flags(), []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + host,
		"--advertise-address=" + host,
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + p.file("apiserver.crt"),
		"--tls-private-key-file=" + p.file("apiserver.key"),
		"--client-ca-file=" + p.file("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.file("sa.pub"),
		"--service-account-signing-key-file=" + p.file("sa.key"),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// The kubernetes Service's endpoint would be 127.0.0.1, which Endpoints
		// validation rejects, and nothing routes ClusterIPs here anyway.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	})
	if err != nil {
		return nil, err
	}
	s.SecureServing.Listener = l
	return func(ctx context.Context) error {
		if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
			return err
		}
		completed, err := s.Complete(ctx)
		if err != nil {
			return err
		}
		if errs := completed.Validate(); len(errs) != 0 {
			return utilerrors.NewAggregate(errs)
		}
		return apiserverapp.Run(ctx, completed)
	}, nil
}

// prepareControllerManager parses kube-controller-manager's flags; the returned function
// runs it. It must come first: its Flags() changes a default of the feature gate that all
// three components share, which is only allowed before any gate flag is registered.
func prepareControllerManager(p *pki) (func(context.Context) error, error) {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, err
	}
	known, disabled, aliases := kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()
	fss := s.Flags(known, disabled, aliases)
	s.ParsedFlags = &fss
	err = parseInto("kube-controller-manager", fss, []string{
		"--kubeconfig=" + p.file("controller-manager.kubeconfig"),
		"--leader-elect=false",
		"--secure-port=0", // no health endpoint: nothing would call it
		"--bind-address=" + host,
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + p.file("sa.key"),
		"--root-ca-file=" + p.file("ca.crt"),
		"--cluster-signing-cert-file=" + p.file("ca.crt"),
		"--cluster-signing-key-file=" + p.file("ca.key"),
		"--controllers=*",
		"--profiling=false",
	})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		if err := s.ComponentGlobalsRegistry.Set(); err != nil {
			return err
		}
		c, err := s.Config(ctx, known, disabled, aliases)
		if err != nil {
			return err
		}
		return kcmapp.Run(ctx, c.Complete())
	}, nil
}

// prepareScheduler parses kube-scheduler's flags; the returned function runs it.
func prepareScheduler(p *pki) (func(context.Context) error, error) {
	opts := schedoptions.NewOptions()
	err := parseInto("kube-scheduler", *opts.Flags, []string{
		"--kubeconfig=" + p.file("scheduler.kubeconfig"),
		"--leader-elect=false",
		"--secure-port=0", // no health endpoint: nothing would call it
		"--bind-address=" + host,
		"--profiling=false",
	})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
			return err
		}
		cc, sched, err := schedapp.Setup(ctx, opts)
		if err != nil {
			return err
		}
		err = schedapp.Run(ctx, cc, sched)
		if ctx.Err() != nil {
			return nil // "finished without leader elect" is how it reports a normal stop
		}
		return err
	}, nil
}

// waitReady polls the apiserver's /readyz with the admin identity.
func waitReady(ctx context.Context, failed <-chan error, cfg *rest.Config) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var last string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(c context.Context) (bool, error) {
		select {
		case err := <-failed:
			return false, err
		default:
		}
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(c)
		if err != nil {
			last = fmt.Sprintf("%v: %s", err, body)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver not ready (last /readyz answer: %s): %w", last, err)
	}
	return nil
}

// waitDefaultServiceAccount waits for the serviceaccount controller to create
// default/default: proof that kube-controller-manager runs and is authorized.
func waitDefaultServiceAccount(ctx context.Context, failed <-chan error, cfg *rest.Config) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(c context.Context) (bool, error) {
		select {
		case err := <-failed:
			return false, err
		default:
		}
		_, err := client.CoreV1().ServiceAccounts("default").Get(c, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("kube-controller-manager did not create ServiceAccount default/default: %w", err)
	}
	return nil
}

func writeKubeconfig(path, server string, caPEM []byte, user clientUser) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kastor"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user.name] = &clientcmdapi.AuthInfo{ClientCertificateData: user.certPEM, ClientKeyData: user.keyPEM}
	cfg.Contexts["kastor"] = &clientcmdapi.Context{Cluster: "kastor", AuthInfo: user.name}
	cfg.CurrentContext = "kastor"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return clientcmd.WriteToFile(*cfg, path)
}
