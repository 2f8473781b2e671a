package kubetest

import (
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
)

func kubernetesScheme() serializer.CodecFactory { return scheme.Codecs }
