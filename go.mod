module github.com/libmetricq/libmetricq

go 1.26

require (
	github.com/rabbitmq/amqp091-go v1.16.0
	google.golang.org/protobuf v1.36.12
)
